"""Low precision: which kernels run, whether their numbers are right, and what gluonface allows.

Three questions, answered separately:

1. **Do the kernels run and compute the right numbers?** ``kernel_check(dtype, ctx)`` runs a small graph
   (convolution → BatchNorm → relu → dense, the operators AMP lowers) in ``dtype`` and in float32 on the
   same values and compares the output and every gradient by cosine. MXNet 1.9.1's oneDNN has bfloat16
   kernels only on CPUs with AVX-512; its CPU float16 GEMM does not exist. The answer comes from the kernels
   themselves, never from the CPU's name, and is cached per (dtype, context) for the process.
2. **Is training in ``dtype`` as good as float32?** float16 (GPU, dynamic loss scaling) is allowed where its
   kernels check out. bfloat16 training is refused (``BF16_TRAINING_REFUSED`` says why): its kernels are
   right one by one, but bfloat16's 8-bit mantissa compounds through a training-mode network (batch
   statistics at every layer; BatchNorm-shift gradients that are sums of ~10^4 nearly cancelling terms), so
   whole-step gradients come out percents to tens of percents off in direction.
3. **Is inference in ``dtype`` right for this network?** ``convert_block`` compares the converted network
   with float32 on real images when it is built and refuses below ``BF16_INFER_MIN_COSINE``.

``amp.init`` patches MXNet's operator namespaces for the whole process and cannot be undone, so it runs
before any network is built, once per process.
"""
import numpy as np

from gluonface.errors import GluonFaceError

_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}
_probe_cache = {}

# Kernel probe bars: one low-precision rounding per operator keeps a well-conditioned output within
# ~2^-8 relative (cosine > 0.9999) and gradients within cosine > 0.999; wrong kernels land far below.
PROBE_MIN_FORWARD_COSINE = 0.999
PROBE_MIN_GRAD_COSINE = 0.99
# bf16 inference of a whole network on real faces (measured 0.9998-0.99999 for iresnet and MobileFaceNet).
BF16_INFER_MIN_COSINE = 0.999

BF16_TRAINING_REFUSED = (
    "bfloat16 training is refused: its gradients are not within cosine 0.99 of float32 for every parameter. "
    "Measured with MXNet 1.9.1 against float64 (bench/results/precision.md; every backbone family, ArcFace, "
    "CosFace, softmax, triplet, sub-center and Partial FC): each bf16 kernel alone is right (cosine 0.999996) "
    "but whole training steps are not: iresnet18's BatchNorm-shift gradients reach cosine 0.98, MobileFaceNet's "
    "and gluoncv ResNet's gradients a median of 0.94, and MobileNetV2's embeddings themselves 0.88, because "
    "rounding to bfloat16's 8-bit mantissa compounds through every training-mode BatchNorm; and without AMX it "
    "is not faster. fix: train in float32 (train.amp=off or auto), or float16 on a GPU (train.amp=fp16)")


def canonical_dtype(dtype):
    """``'bf16'``/``'bfloat16'`` → ``'bfloat16'``; ``'fp16'``/``'float16'`` → ``'float16'``."""
    if dtype not in _DTYPES:
        raise GluonFaceError(f"unknown low-precision dtype {dtype!r}; fix: use bf16 (CPU) or fp16 (GPU)")
    return _DTYPES[dtype]


def _mx_error_line(exc):
    """The informative line of an MXNetError (its text starts with a C++ traceback header)."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    named = [l for l in lines if "Error" in l and not l.startswith("Traceback")]
    return (named or lines or [type(exc).__name__])[-1][:200]


def _cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def _probe_graph(mx, low, ctx, seed=0, dtype="float32"):
    """Output and parameter gradients of conv → BN → relu → dense with the data path in ``low`` (or all in
    ``dtype`` when ``low`` is None). Parameters are ``dtype`` leaves cast on use, as AMP does; BatchNorm keeps
    its statistics and scale/shift in ``dtype``. Returns (output (4, 10), [4 gradients]) as NumPy arrays."""
    rng = np.random.default_rng(seed)

    def arr(v):
        return mx.nd.array(v, ctx=ctx, dtype=dtype)
    x = arr(rng.normal(size=(4, 8, 12, 12)))
    params = [arr(v) for v in (rng.normal(0, 0.2, (16, 8, 3, 3)), rng.uniform(0.5, 1.5, 16),
                               rng.normal(0, 0.1, 16), rng.normal(0, 0.05, (10, 16 * 12 * 12)))]
    proj = arr(rng.normal(size=(4, 10)))
    for p in params:
        p.attach_grad()
    cast = (lambda a: mx.nd.amp_cast(a, dtype=low)) if low is not None else (lambda a: a)
    w, gamma, beta, fw = params
    with mx.autograd.record():
        h = mx.nd.Convolution(cast(x), cast(w), kernel=(3, 3), pad=(1, 1), num_filter=16, no_bias=True)
        h = mx.nd.BatchNorm(h, gamma, beta, arr(np.zeros(16)), arr(np.ones(16)), fix_gamma=False, eps=2e-5)
        out = mx.nd.FullyConnected(mx.nd.relu(h), cast(fw), num_hidden=10, no_bias=True)
        out = mx.nd.amp_cast(out, dtype=dtype) if low is not None else out
        loss = (out * proj).sum()   # a random projection: a well-conditioned gradient for every parameter
    loss.backward()
    return out.asnumpy(), [p.grad.asnumpy() for p in params]


def kernel_check(dtype, ctx=None):
    """Whether ``dtype`` kernels run on ``ctx`` and agree with float32 (forward and every gradient).

    Runs once per (dtype, context) and caches the answer; it does not call ``amp.init``.

    Returns:
        (ok bool, detail str): the cosines measured, or the error the kernels raised.
    """
    import mxnet as mx
    dtype = canonical_dtype(dtype)
    ctx = ctx or mx.cpu()
    key = (dtype, str(ctx))
    if key not in _probe_cache:
        from mxnet.contrib.amp.amp import bfloat16
        low = bfloat16 if dtype == "bfloat16" else dtype   # amp_cast wants numpy's bfloat16 descriptor
        try:
            ref_out, ref_grads = _probe_graph(mx, None, ctx)
            out, grads = _probe_graph(mx, low, ctx)
        except mx.base.MXNetError as exc:
            _probe_cache[key] = (False, f"{dtype} kernels do not run on {ctx}: {_mx_error_line(exc)}")
            try:   # other queued operators of the failed graph hold the same error: collect it here, not at exit
                mx.nd.waitall()
            except mx.base.MXNetError:
                pass
        else:
            fwd = _cosine(out, ref_out)
            worst = min(_cosine(g, r) for g, r in zip(grads, ref_grads))
            ok = fwd >= PROBE_MIN_FORWARD_COSINE and worst >= PROBE_MIN_GRAD_COSINE
            _probe_cache[key] = (ok, f"{dtype} on {ctx}: output cosine {fwd:.5f} (bar {PROBE_MIN_FORWARD_COSINE}), "
                                     f"worst gradient cosine {worst:.5f} (bar {PROBE_MIN_GRAD_COSINE}) to float32")
    return _probe_cache[key]


def lowp_supported(dtype, ctx=None):
    """``kernel_check(dtype, ctx)[0]``: the kernels run and their numbers agree with float32."""
    return kernel_check(dtype, ctx)[0]


def check_training_dtype(dtype, ctx=None):
    """Raise ``GluonFaceError`` unless gluonface trains in ``dtype`` on ``ctx`` (float16 on a GPU whose
    kernels check out); bfloat16 training is refused everywhere (``BF16_TRAINING_REFUSED``)."""
    import mxnet as mx
    dtype = canonical_dtype(dtype)
    ctx = ctx or mx.cpu()
    if dtype == "bfloat16":
        raise GluonFaceError(BF16_TRAINING_REFUSED)
    if ctx.device_type != "gpu":
        raise GluonFaceError("train.amp=fp16 needs a GPU (CPU kernels have no float16 path); fix: train in "
                             "float32 on CPU (train.amp=off or auto)")
    ok, detail = kernel_check(dtype, ctx)
    if not ok:
        raise GluonFaceError(f"float16 is not usable here ({detail}); fix: train in float32 (train.amp=off)")


def init_amp(dtype, ctx=None):
    """Initialise ``mxnet.contrib.amp`` for ``dtype`` after checking its kernels on ``ctx``.

    Call once per process, before building networks; later calls with the same dtype are no-ops. This only
    checks the kernels: training code asks ``check_training_dtype`` first.

    Returns:
        The canonical dtype string.

    Raises:
        GluonFaceError: kernels missing or wrong, or AMP already initialised with another dtype.
    """
    import mxnet as mx
    from mxnet.contrib import amp
    dtype = canonical_dtype(dtype)
    ctx = ctx or mx.cpu()
    ok, detail = kernel_check(dtype, ctx)
    if not ok:
        raise GluonFaceError(f"{detail} with MXNet {mx.__version__} (bfloat16 needs a CPU with AVX-512, "
                             "float16 a GPU); fix: use float32 on this machine")
    current = getattr(amp.amp, "_gluonface_dtype", None)
    if current is not None and current != dtype:
        raise GluonFaceError(f"AMP already initialised with {current} in this process; fix: use one dtype "
                             "per process")
    if current is None:
        amp.init(target_dtype=dtype)
        amp.amp._gluonface_dtype = dtype
    return dtype


def convert_block(net, dtype, images, ctx=None, min_cosine=BF16_INFER_MIN_COSINE):
    """A low-precision inference copy of ``net``, checked against float32 on ``images``.

    Args:
        net: an initialised float32 ``HybridBlock``, (N, 3, H, W) float32 raw pixels → (N, E).
        dtype: ``'bf16'`` (CPU) or ``'fp16'`` (GPU).
        images: (n, 3, H, W) float32 raw pixels, real aligned faces (calibration images): the check runs on
            the distribution the model will see.
        min_cosine: every image's embedding must have at least this cosine to float32's.

    Returns:
        (block, report): a ``SymbolBlock`` taking float32 and returning float32 with the convolutions and
        dense layers in ``dtype`` (BatchNorm parameters stay float32), and {'min_cosine', 'mean_cosine'}.

    Raises:
        GluonFaceError: kernels missing or wrong, or an embedding below ``min_cosine``.
    """
    import mxnet as mx
    from mxnet.contrib import amp
    dtype = canonical_dtype(dtype)
    ctx = ctx or mx.cpu()
    ok, detail = kernel_check(dtype, ctx)
    if not ok:
        raise GluonFaceError(f"{detail}; fix: keep the float32 network")
    from gluonface.export.symbol import embedding_symbol, symbol_block
    images = mx.nd.array(np.asarray(images, np.float32), ctx=ctx)
    net.hybridize()
    ref = net(images).asnumpy()
    # Convert the standard-operator graph (what ``gluonface export`` writes): the executed graph may hold
    # gluonface's float32-only native ops (gluonface.ops), which AMP cannot cast.
    sym, arg, aux = embedding_symbol(net)
    low_sym, low_arg, low_aux = amp.convert_model(sym, arg, aux, target_dtype=dtype, cast_optional_params=False)
    converted = symbol_block(low_sym, dict(low_arg, **low_aux), ctx=ctx)
    got = converted(images).astype("float32").asnumpy()
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-30)
    report = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "images": int(len(cos))}
    if report["min_cosine"] < min_cosine:
        raise GluonFaceError(f"the {dtype} network's embeddings differ from float32's on the check images "
                             f"(min cosine {report['min_cosine']:.5f} < {min_cosine}); fix: keep the float32 "
                             "network")
    return converted, report
