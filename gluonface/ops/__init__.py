"""gluonface's own CPU kernels as MXNet custom operators, with the pure-MXNet formulation as fallback.

What the ops are: ``_gluonface_prelu`` (fused per-channel PReLU forward, backward and slope-gradient
reduction; :mod:`gluonface.ops.prelu`, used by ``ChannelPReLU``) and ``_gluonface_bn_prelu`` (training and
inference BatchNorm + PReLU in one op; :mod:`gluonface.ops.bn_prelu`, used by ``conv_bn``'s container),
compiled from ``csrc/`` by ``make install`` into ``libgluonface_ops.so`` and loaded on first use
(:mod:`gluonface.ops.library`); :func:`status` says what runs. Each has the pure-MXNet formulation as its
fallback, chosen when the graph is traced.

:mod:`gluonface.ops.int8net` is separate: gluonface's INT8 inference runner (``csrc/int8`` →
``libgluonface_int8.so``, plain C++ through ctypes, no MXNet API), which ``FaceEmbedder`` uses for INT8 models.

How MXNet 1.9.1's extension library API (``include/mxnet/lib_api.h`` + ``src/lib_api.cc`` in the wheel)
treats these ops, checked on this build (bench/probe_ops_api.py prints the evidence; source lines are from
apache/mxnet tag 1.9.1, src/c_api/c_api.cc):

- Imperative, hybridized (with and without ``static_alloc``/``static_shape``) and under autograd all work;
  ops appear in ``mx.nd._internal`` / ``mx.sym._internal`` (names starting with ``_``). The backward op
  receives (output gradients, inputs, outputs) and must return one gradient per input.
- They run through the threaded engine like built-in ops: registered as ``FComputeEx<cpu>`` with
  dispatch mode ``kFComputeEx`` (c_api.cc ``registerOp``), pushed asynchronously (the imperative call
  returns before the kernel runs). MXNet requests ``kTempSpace`` and ``kParallelRandom`` for every custom op;
  ``OpResource::alloc_cpu`` hands out the temp space (reused, not a fresh allocation).
- oneDNN layouts: ``CustomFComputeDispatcher`` calls ``Reorder2Default()`` on every input that holds oneDNN
  (blocked) data: synchronously, into a newly allocated array, at every call (c_api.cc lines 154-159);
  ``MXTensor`` carries no layout, so the API cannot hand blocked data to a library. oneDNN convolution and
  BatchNorm write blocked outputs (``aBcd16b`` on AVX-512) in training as in inference (mkldnn_base.cc
  ``CreateMKLDNNMem``: a ``kWriteTo`` output becomes oneDNN data), so a custom op behind conv/BN reorders its
  input in the forward pass and its blocked inputs again in the backward pass, and the next convolution
  reorders the op's plain output back. bench/probe_ops_api.py counts the reorders of one conv → BN → [op] →
  conv training step: 9 with nothing between, 15 with ``_gluonface_prelu``, 20 with the MXNet PReLU
  formulation (``minimum``/``elemwise_add`` are not oneDNN ops either); in inference 2 / 4 / 5. Each custom op
  in a oneDNN chain therefore costs about one extra memory pass per blocked input; fusing neighbours into one
  custom op pays it once.
- Loading order with AMP: ``mx.library.load`` regenerates ``mx.nd``/``mx.sym`` and so drops the operator
  patches of ``mxnet.contrib.amp.init``; the library is therefore never loaded after AMP was initialised
  (the float32 kernels are not used with AMP anyway).
- No ``OpReqType`` reaches the library (the dispatcher never forwards ``req``): outputs are always
  overwritten. ``grad_req='add'`` would silently lose accumulation (checked: the slope gradient after two
  backward passes equals one pass), so the ops are used only where gradients are written
  (:func:`gluonface.ops.prelu.use_native_prelu`); ``grad_req='null'`` is fine.
- No ``is_train`` reaches the library either (lib_api.h has no training flag; ``OpResource`` holds only
  allocators, streams and random states), although a hybridized block runs one cached graph for training
  and inference. ``_gluonface_bn_prelu`` therefore takes a one-element input from ``Dropout(ones(1))``:
  exactly 1 in inference, 0 or 2 in training.
- ``FInferStorageType`` is not needed (dense default is assigned when the library gives none);
  ``FMutateInputs`` is needed for an op that writes an input: ``_gluonface_bn_prelu`` declares its moving
  mean and variance with it (so the engine orders their readers); stateful ops only for kernels that keep
  state between calls, which none of ours do. Input shapes may be assigned by the library's shape
  inference (deferred parameters reach it as empty shapes or dimensions of (unsigned) -1).
- Custom ops have no in-place option (``FInplaceOption``) and no ``FGradient`` choice of which inputs the
  backward keeps: it keeps every input and output alive, which costs nothing here (the next convolution
  keeps PReLU's output for its own backward anyway).
- Exported graphs: gluonface's exporter traces ``net(mx.sym.var('data'))`` and gets the standard
  formulation (:mod:`gluonface.ops.tracing`); Gluon's own ``HybridBlock.export`` writes the executed
  graph, which holds the custom op while it is active.
"""
from gluonface.ops.library import isa, native_active, set_enabled, set_isa, status, supported_isas

__all__ = ["isa", "native_active", "set_enabled", "set_isa", "status", "supported_isas"]
