"""Low-precision helpers around ``mxnet.contrib.amp``: bfloat16 on CPU, float16 on GPU.

``amp.init`` patches MXNet's operator namespaces for the whole process and cannot be undone, so it must run
before any network is built, once per process. The float16 (GPU) and bfloat16 (CPU) paths are the same code
apart from the dtype. Whether the hardware can run the low-precision kernels is checked up front by
``lowp_supported``: MXNet 1.9.1's oneDNN implements bfloat16 convolutions only on CPUs with AVX-512
(``avx512_core``/``avx512_bf16``), and its CPU float16 GEMM does not exist at all; without the check a run
fails at the first step with "could not create a primitive descriptor iterator".
"""
from gluonface.errors import GluonFaceError

_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}
_probe_cache = {}


def canonical_dtype(dtype):
    """``'bf16'``/``'bfloat16'`` → ``'bfloat16'``; ``'fp16'``/``'float16'`` → ``'float16'``."""
    if dtype not in _DTYPES:
        raise GluonFaceError(f"unknown low-precision dtype {dtype!r}; fix: use bf16 (CPU) or fp16 (GPU)")
    return _DTYPES[dtype]


def lowp_supported(dtype, ctx=None):
    """Whether a conv + dense forward/backward runs in ``dtype`` on ``ctx`` (default CPU).

    Runs a tiny probe once per (dtype, context) and caches the answer; it does not call ``amp.init``.
    """
    import mxnet as mx
    dtype = canonical_dtype(dtype)
    ctx = ctx or mx.cpu()
    key = (dtype, str(ctx))
    if key not in _probe_cache:
        # NDArray.astype wants the numpy-side bfloat16 descriptor, not the string.
        from mxnet.contrib.amp.amp import bfloat16
        np_dtype = bfloat16 if dtype == "bfloat16" else dtype
        try:
            x = mx.nd.ones((1, 8, 8, 8), ctx=ctx).astype(np_dtype)
            w = mx.nd.ones((8, 8, 3, 3), ctx=ctx).astype(np_dtype)
            fw = mx.nd.ones((4, 512), ctx=ctx).astype(np_dtype)
            for a in (x, w, fw):
                a.attach_grad()
            with mx.autograd.record():
                y = mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=8, no_bias=True, pad=(1, 1))
                z = mx.nd.FullyConnected(y, fw, num_hidden=4, no_bias=True)
            z.backward()
            _probe_cache[key] = bool(mx.nd.sum(z.astype("float32")).asscalar() > 0)
        except mx.base.MXNetError:
            _probe_cache[key] = False
    return _probe_cache[key]


def init_amp(dtype, ctx=None):
    """Initialise ``mxnet.contrib.amp`` for ``dtype`` after checking the hardware supports it.

    Call once per process, before building networks. Later calls with the same dtype are no-ops.

    Args:
        dtype: ``'bf16'``/``'bfloat16'`` (CPU) or ``'fp16'``/``'float16'`` (GPU).
        ctx: the training context (``mx.cpu()`` default).

    Returns:
        The canonical dtype string.

    Raises:
        GluonFaceError: unsupported dtype/device pairing, or AMP already initialised with another dtype.
    """
    import mxnet as mx
    from mxnet.contrib import amp
    dtype = canonical_dtype(dtype)
    ctx = ctx or mx.cpu()
    if not lowp_supported(dtype, ctx):
        raise GluonFaceError(
            f"{dtype} kernels are not available on {ctx} with MXNet {mx.__version__} (bfloat16 needs a CPU "
            "with AVX-512, float16 needs a GPU); fix: train in float32 (no AMP) on this machine")
    current = getattr(amp.amp, "_gluonface_dtype", None)
    if current is not None and current != dtype:
        raise GluonFaceError(f"AMP already initialised with {current} in this process; fix: use one dtype "
                             "per process")
    if current is None:
        amp.init(target_dtype=dtype)
        amp.amp._gluonface_dtype = dtype
    return dtype


def convert_block(net, dtype, example_shape=(1, 3, 112, 112), ctx=None):
    """Convert a hybridized float32 network for low-precision inference (``amp.convert_hybrid_block``).

    Args:
        net: an initialised ``HybridBlock``; it is hybridized and run once on zeros of ``example_shape``.
        dtype: ``'bf16'`` or ``'fp16'``.

    Returns:
        A ``SymbolBlock`` that takes float32 input and returns float32 output; the conv/dense inside run in
        ``dtype`` (BatchNorm parameters stay float32, as AMP's lists require).
    """
    import mxnet as mx
    from mxnet.contrib import amp
    dtype = canonical_dtype(dtype)
    ctx = ctx or mx.cpu()
    if not lowp_supported(dtype, ctx):
        raise GluonFaceError(f"{dtype} kernels are not available on {ctx}; fix: keep the float32 network")
    net.hybridize()
    net(mx.nd.zeros(example_shape, ctx=ctx))
    converted = amp.convert_hybrid_block(net, target_dtype=dtype, ctx=ctx, cast_optional_params=False)
    return converted
