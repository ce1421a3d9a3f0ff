"""``FaceEmbedder``: embeddings from an exported model (symbol, INT8 symbol or ONNX) in three lines.

    emb = FaceEmbedder.from_path("out/model")          # or "out/model.onnx", "out/model-int8"
    e = emb.embed(aligned_uint8_images)                 # (N, E) float32, L2-normalised
    emb.compare(e[0], e[1])                             # cosine similarity

Backends. A float32 model runs on MXNet (the folded symbol, bound once per batch shape) or on onnxruntime
(the exported ``.onnx`` beside it, else the folded symbol converted to ONNX in memory). Which is faster
depends on the network, the batch size and the CPU (see bench/results/export.md), so ``backend="auto"``
(the default on a CPU) keeps both, checks that they agree, times each on the caller's own first batches of
a batch class (1..8 images, more than 8) and then runs that class on the faster one. ``backend_report()``
says which runs and what was measured; ``gluonface eval`` writes it to eval.json. ONNX files run on
onnxruntime only, GPU contexts on MXNet only.

INT8 symbols run on MXNet or on gluonface's own INT8 runner (``backend="native"``, :mod:`gluonface.ops.int8net`:
the whole network in one native call, VNNI where the CPU has it; trained iresnet_tiny 4.6x MXNet float32 at
batch 1 where MXNet's INT8 reached 1.4x, bench/results/export.md). ``auto`` keeps both when the runner is built, runs the graph and
agrees with MXNet's INT8 on the probe faces (cosine >= ``quantize.INT8_MIN_COSINE``: the two quantise weights
differently, per channel and per tensor), and times them as above. On MXNet an INT8 symbol is fed uint8 images
as they are (``quantize.uint8_input_form``, built in memory: no float32 copy and no input quantisation
operator); the runner takes uint8 only and hands float input to MXNet. ``input_dtype`` says what a forward
takes.

MXNet's engine matters as much at small batches: ``gluonface eval``/``embed``/``export`` run MXNet's
synchronous engine on the CPU (``gluonface.machine.use_inference_engine``: 5x less time per call at batch 1
for a small network); a serving process of your own gets the same by setting ``MXNET_ENGINE_TYPE=NaiveEngine``
before importing mxnet (never in a training process).
"""
import collections
import functools
import json
import os
import tempfile
import time

import numpy as np

from gluonface.errors import GluonFaceError
from gluonface.evaluate.verification import channels_first, embed_raw, l2_normalize, row_cosines
from gluonface.export.names import BACKENDS, INPUT_NAME
from gluonface.export.symbol import check_input, check_shapes, load_checkpoint, split_prefix

DEFAULT_INPUT_SIZE = (112, 112)
SMALL_BATCH = 8          # batch classes for the auto backend: 1..SMALL_BATCH images, and more
AUTO_TRIALS = 3          # timed calls per backend and class
AUTO_WARMUP = 2          # untimed calls before them (see AutoForward)
BACKEND_MIN_COSINE = 0.9999   # two backends of one model must agree this well on the probe faces


def check_backend(backend):
    if backend not in BACKENDS:
        raise GluonFaceError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}; fix: e.g. --backend auto")
    return backend


_SMALL, _LARGE = f"1-{SMALL_BATCH}", f">{SMALL_BATCH}"


def batch_class(n):
    return _SMALL if n <= SMALL_BATCH else _LARGE


def _takes_uint8(forward):
    return np.dtype(getattr(forward, "input_dtype", np.float32)) == np.uint8


class AutoForward:
    """Runs each batch class on the fastest of equivalent forwards, timed on the caller's own batches.

    Every call returns a real result. The first calls of a class go to one candidate after the other, a block
    of ``warmup + trials`` calls each: the warm-up calls (executors bind, sessions allocate, and the other
    runtime's threads still spin for a moment after its last call) are not timed. Once every candidate has its
    ``trials`` timed calls, the one with the lowest median time per image runs that class from then on.
    """

    def __init__(self, candidates, trials=AUTO_TRIALS, warmup=AUTO_WARMUP, clock=time.perf_counter):
        self.candidates = dict(candidates)
        self.trials, self.warmup = int(trials), int(warmup)
        self.clock = clock
        self.samples = {}     # class -> {name: [seconds per image, ...]} (warm-up calls first)
        self.choice = {}      # class -> name
        self.measured = {}    # class -> {name: ms per image}

    @property
    def input_dtype(self):
        """uint8 when some candidate takes uint8 pixels as they are (the others get a float32 copy), else float32."""
        return np.dtype(np.uint8) if any(_takes_uint8(f) for f in self.candidates.values()) else np.dtype(np.float32)

    @property
    def takes_nhwc(self):
        """True when some candidate takes (B, H, W, 3) uint8 batches as they are (the others get them moved)."""
        return any(callable(getattr(f, "nhwc", None)) for f in self.candidates.values())

    def nhwc(self, x):
        """``self(x)`` for a (B, H, W, 3) uint8 batch: timed and chosen with the same classes."""
        return self(x, layout="NHWC")

    def _run(self, name, x, layout):
        f = self.candidates[name]
        if layout == "NHWC":
            if callable(getattr(f, "nhwc", None)):
                return f.nhwc(x)
            x = channels_first(x, np.uint8)
        if x.dtype == np.uint8 and not _takes_uint8(f):
            x = x.astype(np.float32)
        return f(x)

    def __call__(self, x, layout="NCHW"):
        cls = _SMALL if len(x) <= SMALL_BATCH else _LARGE
        name = self.choice.get(cls)
        if name is not None:
            return self._run(name, x, layout)
        samples = self.samples.setdefault(cls, {n: [] for n in self.candidates})
        per = self.warmup + self.trials
        name = next(n for n, v in samples.items() if len(v) < per)
        start = self.clock()
        out = self._run(name, x, layout)
        samples[name].append((self.clock() - start) / max(len(x), 1))
        if all(len(v) >= per for v in samples.values()):
            ms = {n: 1e3 * float(np.median(v[self.warmup:])) for n, v in samples.items()}
            self.measured[cls] = ms
            self.choice[cls] = min(ms, key=ms.get)
        return out


def read_export_info(path):
    """The ``export.json`` written beside an exported model, or ``{}`` when there is none."""
    meta = os.path.join(os.path.dirname(os.path.abspath(str(path))), "export.json")
    if not os.path.isfile(meta):
        return {}
    with open(meta, encoding="utf-8") as f:
        return json.load(f)


def to_nhwc(images, input_size):
    """Normalise image layout: uint8 HWC/CHW, one image or a batch -> ((N, H, W, 3) uint8, was_single)."""
    x = np.asarray(images)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4:
        raise GluonFaceError(f"images have shape {np.asarray(images).shape}; expected one image (H, W, 3) / "
                             "(3, H, W) or a batch (N, H, W, 3) / (N, 3, H, W); fix: stack aligned RGB faces")
    if x.shape[-1] != 3 and x.shape[1] == 3:
        x = x.transpose(0, 2, 3, 1)
    if x.shape[-1] != 3:
        raise GluonFaceError(f"images have shape {np.asarray(images).shape}: no axis of 3 colour channels; "
                             "fix: convert grayscale/RGBA to RGB (e.g. cv2.cvtColor) before embedding")
    if x.dtype != np.uint8:
        raise GluonFaceError(f"images have dtype {x.dtype}; expected uint8 RGB 0..255; fix: pass the pixels "
                             "as read (the model normalises in-graph)")
    if tuple(x.shape[1:3]) != tuple(input_size):
        raise GluonFaceError(f"images are {x.shape[1]}x{x.shape[2]}; the model expects aligned "
                             f"{input_size[0]}x{input_size[1]} faces; fix: align them first (`gluonface align` "
                             "or FaceEmbedder.embed_photo)")
    return x, single


def onnx_beside(path):
    """``PREFIX.onnx`` beside a symbol ``PREFIX`` / ``PREFIX-symbol.json`` if it exists, else None."""
    prefix = split_prefix(path)[0] + ".onnx"
    return prefix if os.path.isfile(prefix) else None


def _ort_threads(threads):
    if threads:
        return int(threads)
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


def _ort_twin(folded, size, info, flip, threads, onnx_path, probe, reference, source):
    """An onnxruntime ``FaceEmbedder`` of the same model: the exported ``.onnx`` beside it when that file agrees
    with the symbol, else the folded graph converted to ONNX in memory. Raises GluonFaceError when neither
    can run or agree."""
    note = None
    if onnx_path:
        twin = FaceEmbedder._from_onnx(onnx_path, size, info, flip, threads, kind="symbol")
        cos = row_cosines(twin._forward(probe), reference)
        if cos.min() >= BACKEND_MIN_COSINE:
            return twin
        note = (f"{os.path.basename(onnx_path)} beside it disagrees with the symbol (cosine {cos.min():.4f}), "
                "so the symbol was converted instead")
    if folded is None:
        raise GluonFaceError("no float32 graph to convert")
    try:
        import onnxruntime  # noqa: F401
        from gluonface.export.convention import metadata_props
        from gluonface.export.onnx import export_onnx
        with tempfile.TemporaryDirectory(prefix="gluonface-ort-") as tmp:
            path = export_onnx(*folded, os.path.join(tmp, "model.onnx"), input_shape=(1, 3) + size,
                               metadata=metadata_props("raw", size, reference.shape[1]))
            twin = FaceEmbedder._from_onnx(path, size, info, flip, threads, kind="symbol")
    except ImportError as exc:
        raise GluonFaceError(f"onnxruntime is not installed ({exc}); fix: pip install 'gluonface[export]'") from exc
    except GluonFaceError:
        raise
    except Exception as exc:  # the converter raises its own types for graphs it cannot express
        raise GluonFaceError(f"{source} does not convert to ONNX ({type(exc).__name__}: {str(exc)[:200]})") from exc
    cos = row_cosines(twin._forward(probe), reference)
    if cos.min() < BACKEND_MIN_COSINE:
        raise GluonFaceError(f"onnxruntime's embeddings of {source} disagree with MXNet's (cosine {cos.min():.5f} < "
                             f"{BACKEND_MIN_COSINE})")
    twin.backend_note = note
    return twin


def bound_forward(sym, params, ctx, keep=4, input_dtype=np.float32):
    """``f(x (B, 3, H, W) raw pixels) -> (B, E) numpy`` running ``sym`` with fixed ``params`` on ``ctx``.

    One executor per batch shape (the ``keep`` most recent), bound to the parameter arrays and to an input
    array the batch is copied into: at batch 1 this costs ~0.3 ms less per call than a hybridized
    SymbolBlock fed a new ``mx.nd.array`` (Gluon's per-call bookkeeping and a Python-side copy).
    ``input_dtype`` is the graph's input type: float32, or uint8 for ``quantize.uint8_input_form`` (then
    ``x`` must be uint8). ``f.input_dtype`` says which, so callers holding uint8 images (``embed_raw``) can
    skip the conversion to float32.
    """
    import ctypes
    import mxnet as mx
    from mxnet.base import _LIB, check_call
    input_dtype = np.dtype(input_dtype)
    aux_names = set(sym.list_auxiliary_states())
    args = {n: v.as_in_context(ctx) for n, v in params.items() if n not in aux_names}
    aux = {n: v.as_in_context(ctx) for n, v in params.items() if n in aux_names}
    executors = collections.OrderedDict()   # batch shape -> (executor, input handle, output NDArray, its shape, dtype)

    def forward(x):
        x = np.ascontiguousarray(x, dtype=input_dtype)
        entry = executors.get(x.shape)
        if entry is None:
            data = mx.nd.empty(x.shape, ctx=ctx, dtype=input_dtype)
            ex = sym.bind(ctx, dict(args, **{INPUT_NAME: data}), grad_req="null", aux_states=aux)
            out = ex.outputs[0]
            entry = executors[x.shape] = (ex, data.handle, out, out.shape, out.dtype)
            while len(executors) > keep:
                executors.popitem(last=False)
        else:
            executors.move_to_end(x.shape)
        ex, data, out, shape, dtype = entry
        # The C calls straight: NDArray._sync_copyfrom, Executor.forward (which makes new output handles every
        # call) and asnumpy cost ~25 us of Python per call, a tenth of a batch-1 forward of a small network.
        check_call(_LIB.MXNDArraySyncCopyFromCPU(data, ctypes.c_void_p(x.ctypes.data), ctypes.c_size_t(x.size)))
        check_call(_LIB.MXExecutorForward(ex.handle, ctypes.c_int(0)))
        y = np.empty(shape, dtype=dtype)
        check_call(_LIB.MXNDArraySyncCopyToCPU(out.handle, ctypes.c_void_p(y.ctypes.data), ctypes.c_size_t(y.size)))
        return y
    forward.input_dtype = input_dtype
    return forward


def _uint8_fed(sym, params, ctx, forward, probe, reference):
    """``forward`` plus, for uint8 batches, the INT8 graph fed the pixels as they are
    (``quantize.uint8_input_form``: one operator and two dtype conversions fewer per call), when that form gives
    ``forward``'s result bit for bit on the whole-valued ``probe``; else ``forward`` alone."""
    from gluonface.export.quantize import uint8_input_form
    form = uint8_input_form(sym, params)
    if form is None:
        return forward
    fed = bound_forward(*form, ctx, input_dtype=np.uint8)
    pixels = np.rint(probe).astype(np.uint8)
    if not np.array_equal(fed(pixels), forward(pixels.astype(np.float32))):
        return forward

    def either(x):
        return fed(x) if x.dtype == np.uint8 else forward(x)
    either.input_dtype = np.dtype(np.uint8)
    return either


def native_threads(threads):
    """Threads of the native INT8 runner: ``threads``, else ``OMP_NUM_THREADS``, else every core."""
    return _ort_threads(threads) or os.cpu_count() or 1


def _native_int8(forward, sym, params, size, info, threads):
    """``(f, "")``: the INT8 graph on gluonface's native runner (uint8 batches; float ones go to ``forward``, the
    MXNet form); ``(None, why)`` when the runner is not built, does not run this graph, or disagrees with
    ``forward`` on the probe faces, or when ``gluonface export`` found it below the float32 bar."""
    from gluonface.export.quantize import INT8_MIN_COSINE
    from gluonface.ops import int8net
    checked = (info.get("checks") or {}).get("int8_native_vs_fp32_on_calibration")
    if isinstance(checked, dict) and checked.get("passed") is False:
        return None, f"`gluonface export` found its embeddings below the float32 bar ({checked.get('error', '')})"
    try:
        net = int8net.Int8Net(sym, params, (3,) + tuple(size))
    except GluonFaceError as exc:
        return None, str(exc).split("; fix:")[0]
    pixels = probe_faces(size)
    cos = row_cosines(net(pixels), forward(pixels))
    if cos.min() < INT8_MIN_COSINE:
        return None, f"its embeddings differ from MXNet's INT8 ones on the probe faces (min cosine {cos.min():.4f}, " \
                     f"bar {INT8_MIN_COSINE})"
    n_threads = native_threads(threads)

    def native(x):
        return net(x, threads=n_threads) if x.dtype == np.uint8 else forward(x)
    native.input_dtype = np.dtype(np.uint8)
    native.nhwc = lambda x: net(x, layout="NHWC", threads=n_threads)
    native.runner = net
    return native, ""


def probe_faces(size, n=4, seed=7):
    """uint8 (n, 3, H, W) synthetic aligned faces for agreement checks: face statistics reach the calibrated
    ranges as real faces do, where uniform noise would not. Rendered once per process (~0.3 s)."""
    return _probe_faces(tuple(int(v) for v in size), int(n), int(seed)).copy()


@functools.lru_cache(maxsize=4)
def _probe_faces(size, n, seed):
    import cv2
    from gluonface.data.synthetic import SynthSpec, render_image
    spec = SynthSpec(identities=n, images_per_id=1, size=max(size), seed=seed)
    faces = [np.ascontiguousarray(render_image(spec, i, 0)[0][:, :, ::-1]) for i in range(n)]
    faces = [f if f.shape[:2] == tuple(size) else cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA)
             for f in faces]
    return np.ascontiguousarray(np.stack(faces).transpose(0, 3, 1, 2))


class FaceEmbedder:
    """Embedding inference over one exported model.

    Args:
        forward: ``f(x (B, 3, H, W) float32 raw RGB) -> (B, E) float32`` (not normalised).
        input_size: (H, W).
        kind: ``symbol``, ``int8``, ``onnx`` or ``gluon`` (``from_net``).
        info: the export.json contents (may be empty).
        input_spec: ONNX only: ``{"mean", "std", "color_order", "convention", "source"}``, what the raw pixels
            are turned into before the session runs (``convention.onnx_input_spec``: the model's metadata).
        flip: default flip test-time augmentation for ``embed``.
    """

    def __init__(self, forward, input_size=DEFAULT_INPUT_SIZE, kind="symbol", info=None, flip=True,
                 input_spec=None, backend=None, backend_note=None):
        self._forward = forward
        self.input_spec = input_spec
        self.input_size = tuple(input_size)
        self.kind = kind
        self.info = dict(info or {})
        self.flip = flip
        self.backend = backend or ("onnxruntime" if kind == "onnx" else "mxnet")
        self.backend_note = backend_note
        self._detector = None

    def backend_report(self):
        """Which backend runs: ``{"backend": auto|mxnet|onnxruntime, "runs": {batch class: backend},
        "ms_per_image": {class: {backend: ms}}, "note": why a backend was left out}`` (auto fills ``runs`` as
        each batch class is measured)."""
        report = {"backend": self.backend}
        if isinstance(self._forward, AutoForward):
            report["candidates"] = sorted(self._forward.candidates)
            report["runs"] = dict(self._forward.choice)
            report["ms_per_image"] = {c: {n: round(v, 4) for n, v in m.items()}
                                      for c, m in self._forward.measured.items()}
        else:
            report["runs"] = {"all": self.backend}
        if self.backend != "onnxruntime":
            from gluonface.machine import mxnet_engine
            report["mxnet_engine"] = mxnet_engine()
        if self.backend_note:
            report["note"] = self.backend_note
        return report

    def describe_backend(self):
        """One line for people: which backend ran which batch sizes, and the times it was chosen on."""
        r = self.backend_report()
        if r["backend"] != "auto":
            text = r["backend"]
        else:
            parts = []
            for cls, name in sorted(r["runs"].items()):
                ms = r["ms_per_image"].get(cls, {})
                others = ", ".join(f"{n} {v:.3g}" for n, v in sorted(ms.items()) if n != name)
                parts.append(f"batch {cls}: {name} ({ms.get(name, 0):.3g} ms/image; {others})")
            text = "auto: " + ("; ".join(parts) if parts else "not measured yet") + \
                (f" [candidates: {', '.join(r['candidates'])}]" if len(r.get("candidates", ())) < 2 else "")
        return text + (f" ({r['note']})" if r.get("note") else "")

    @classmethod
    def from_path(cls, path, ctx=None, flip=True, threads=None, backend="auto"):
        """Load ``PREFIX`` (symbol or INT8 checkpoint), ``PREFIX-symbol.json`` or ``MODEL.onnx``.

        Args:
            ctx: MXNet context for symbol models (default cpu).
            threads: onnxruntime intra-op threads (default: ``OMP_NUM_THREADS`` if set, else the runtime's).
            backend: ``auto`` (default), ``mxnet`` or ``onnxruntime`` (see the module docstring).
        """
        path = str(path)
        check_backend(backend)
        info = read_export_info(path)
        size = tuple(info.get("input_size", DEFAULT_INPUT_SIZE))
        if path.endswith(".onnx"):
            if backend == "mxnet":
                raise GluonFaceError(f"{path} is an ONNX file: it runs on onnxruntime; fix: --backend auto or "
                                     "onnxruntime, or pass the exported PREFIX (PREFIX-symbol.json) to run on MXNet")
            return cls._from_onnx(path, size, info, flip, threads)
        sym, params, _, _ = load_checkpoint(path)
        kind = "int8" if "_contrib_quantize" in sym.tojson() else "symbol"
        if kind == "symbol":
            check_shapes(sym, params, size, path)
        beside = onnx_beside(path)
        return cls._from_symbol(sym, params, size, kind, info, flip, ctx, path, backend=backend, threads=threads,
                                onnx_path=beside)

    @classmethod
    def _from_onnx(cls, path, size, info, flip, threads, kind="onnx"):
        """An onnxruntime session fed what the model's input convention asks (``convention.onnx_input_spec``)."""
        from gluonface.export.convention import onnx_input_spec
        from gluonface.export.onnx import onnx_session
        sess = onnx_session(path, _ort_threads(threads))
        inp = sess.get_inputs()[0]
        if len(inp.shape) == 4 and all(isinstance(d, int) for d in inp.shape[2:]):
            size = tuple(inp.shape[2:])
        spec = onnx_input_spec(path, sess.get_modelmeta().custom_metadata_map)
        mean, inv_std, bgr = np.float32(spec["mean"]), np.float32(1.0 / spec["std"]), spec["color_order"] == "BGR"
        plain = (mean, inv_std, bgr) == (0.0, 1.0, False)
        feed, outputs = {inp.name: None}, [sess.get_outputs()[0].name]   # named output: ~2 us less per call

        def forward(x):   # x: a checked (B, 3, H, W) float32 batch (FaceEmbedder.__call__)
            if not plain:
                if bgr:
                    x = x[:, ::-1]
                x = np.ascontiguousarray((x - mean) * inv_std, dtype=np.float32)
            feed[inp.name] = x
            return sess.run(outputs, feed)[0]
        return cls(forward, size, kind, info, flip, input_spec=spec, backend="onnxruntime")

    @classmethod
    def from_net(cls, net, input_size=DEFAULT_INPUT_SIZE, ctx=None, flip=True, backend="mxnet", threads=None):
        """Embed with a Gluon network in memory, run as an exported symbol runs (traced, folded, hybridized).

        Args:
            net: initialised HybridBlock, (B, 3, H, W) float32 raw RGB -> (B, E), e.g. ``load_backbone``'s.
            input_size: (H, W) of the aligned faces.
            backend: ``mxnet`` (default here), ``onnxruntime`` or ``auto`` (the graph converted in memory).
        """
        from gluonface.export.symbol import embedding_symbol
        check_backend(backend)
        sym, arg, aux = embedding_symbol(net)
        return cls._from_symbol(sym, dict(arg, **aux), tuple(input_size), "gluon", {}, flip, ctx,
                                type(net).__name__, backend=backend, threads=threads)

    @classmethod
    def _from_symbol(cls, sym, params, size, kind, info, flip, ctx, source, backend="mxnet", threads=None,
                     onnx_path=None):
        """Fold a float32 graph for inference (``gluonface.export.fold``), bind it on ``ctx``, and with ``auto`` /
        ``onnxruntime`` add an onnxruntime session of the same graph."""
        import mxnet as mx
        from gluonface.export.fold import fold_for_inference, lower_for_onednn
        ctx = ctx or mx.cpu()
        note = None
        if backend == "native" and (kind != "int8" or ctx.device_type != "cpu"):
            raise GluonFaceError(f"cannot run {source} on gluonface's native runner: it runs INT8 symbols on the "
                                 "CPU; fix: --backend auto or mxnet" + (", or export an INT8 model (`gluonface "
                                                                       "export --int8`)" if kind != "int8" else ""))
        if backend == "onnxruntime" and kind == "int8":
            raise GluonFaceError(f"cannot run {source} on onnxruntime: INT8 symbols run on MXNet or gluonface's "
                                 "native runner; fix: --backend auto, mxnet or native, or embed with the float32 "
                                 "PREFIX / its .onnx")
        if backend not in ("mxnet", "native") and ctx.device_type != "cpu":
            backend, note = "mxnet", f"onnxruntime and the native runner run here on the CPU only and the " \
                                     f"context is {ctx}"
        folded = None
        if kind != "int8":  # INT8 graphs come out of quantisation already fused
            folded = fold_for_inference(sym, params, {}, (1, 3) + size)
            sym, arg, aux = folded
            if ctx.device_type == "cpu" and mx.runtime.Features().is_enabled("MKLDNN"):
                sym, arg, aux = lower_for_onednn(sym, arg, aux, (1, 3) + size)
                sym = sym.optimize_for("MKLDNN")  # fuse conv + activation / sum, as Module does by default
            params = dict(arg, **aux)
        forward = bound_forward(sym, params, ctx)
        probe = np.random.default_rng(0).uniform(0, 255, (2, 3) + size).astype(np.float32)
        try:
            reference = forward(probe)
        except mx.base.MXNetError as exc:
            raise GluonFaceError(f"{source} does not run on (2, 3, {size[0]}, {size[1]}) input "
                                 f"({str(exc).splitlines()[0][:200]}); fix: use the symbol and params files "
                                 "written together by `gluonface export` (a params file of another network "
                                 "gives wrong shapes), and check input_size in export.json") from exc
        if kind == "int8":
            forward = _uint8_fed(sym, params, ctx, forward, probe, reference)
            if backend != "mxnet":
                return cls._with_native(forward, sym, params, size, info, flip, source, backend, threads)
        if backend == "mxnet":
            return cls(forward, size, kind, info, flip, backend="mxnet", backend_note=note)
        try:
            ort = _ort_twin(folded, size, info, flip, threads, onnx_path, probe, reference, source)
        except GluonFaceError as exc:
            if backend == "onnxruntime":
                raise
            return cls(forward, size, kind, info, flip, backend="mxnet", backend_note=f"onnxruntime left out: {exc}")
        if backend == "onnxruntime":
            return cls(ort._forward, size, kind, info, flip, backend="onnxruntime", backend_note=ort.backend_note)
        return cls(AutoForward({"mxnet": forward, "onnxruntime": ort._forward}), size, kind, info, flip,
                   backend="auto", backend_note=ort.backend_note)

    @classmethod
    def _with_native(cls, forward, sym, params, size, info, flip, source, backend, threads):
        """An INT8 embedder on the native runner (``native``) or on the faster of it and MXNet (``auto``)."""
        native, why = _native_int8(forward, sym, params, size, info, threads)
        if native is None:
            if backend == "native":
                raise GluonFaceError(f"cannot run {source} on gluonface's native INT8 runner: {why}; fix: "
                                     "--backend auto or mxnet")
            return cls(forward, size, "int8", info, flip, backend="mxnet",
                       backend_note=f"native INT8 runner left out: {why}")
        if backend == "native":
            return cls(native, size, "int8", info, flip, backend="native")
        return cls(AutoForward({"native": native, "mxnet": forward}), size, "int8", info, flip, backend="auto")

    def __call__(self, x):
        """Raw forward pass: (B, 3, H, W) float32 raw RGB -> (B, E) float32 (not normalised)."""
        return np.asarray(self._forward(check_input(x, self.input_size, self.input_dtype)), dtype=np.float32)

    @property
    def takes_nhwc(self):
        """True when ``forward_nhwc`` runs (B, H, W, 3) uint8 batches without moving them to (B, 3, H, W) first
        (gluonface's INT8 runner; ``embed`` uses it)."""
        f = self._forward
        return bool(getattr(f, "takes_nhwc", callable(getattr(f, "nhwc", None))))

    def forward_nhwc(self, x):
        """Raw forward pass of a (B, H, W, 3) uint8 batch -> (B, E) float32 (not normalised)."""
        x = np.ascontiguousarray(x)
        h, w = self.input_size
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (h, w, 3):
            raise GluonFaceError(f"input batch is {x.dtype} {x.shape}; forward_nhwc takes uint8 (N, {h}, {w}, 3); "
                                 f"fix: align faces to {h}x{w} first (`gluonface align`)")
        if not self.takes_nhwc:
            return self(channels_first(x, np.uint8))
        return np.asarray(self._forward.nhwc(x), dtype=np.float32)

    @property
    def input_dtype(self):
        """uint8 when the forward takes uint8 pixels as they are (INT8 symbols on MXNet), else float32: what
        ``__call__`` and ``embed`` hand it."""
        return getattr(self._forward, "input_dtype", np.dtype(np.float32))

    def embed(self, images, flip=None, batch_size=64):
        """L2-normalised embeddings of aligned faces.

        Args:
            images: uint8 RGB, one image (H, W, 3) / (3, H, W) or a batch (N, H, W, 3) / (N, 3, H, W).
            flip: add the mirrored image's embedding first (default: the embedder's ``flip``).

        Returns:
            (E,) float32 for one image, else (N, E) float32.
        """
        x, single = to_nhwc(images, self.input_size)
        flip = self.flip if flip is None else flip
        e = l2_normalize(embed_raw(self, x, batch_size=batch_size, flip=flip))
        return e[0] if single else e

    def compare(self, a, b):
        """Cosine similarity of embeddings ((E,) or (N, E), broadcast row-wise) or of uint8 face images.

        Returns:
            float for two single items, else (N,) float32.
        """
        ea, eb = (self.embed(v) if np.asarray(v).dtype == np.uint8 else np.asarray(v, np.float32)
                  for v in (a, b))
        if ea.shape[-1] != eb.shape[-1]:
            raise GluonFaceError(f"cannot compare embeddings of width {ea.shape[-1]} and {eb.shape[-1]}; fix: "
                                 "compare embeddings from the same model")
        na = ea / np.maximum(np.linalg.norm(ea, axis=-1, keepdims=True), 1e-12)
        nb = eb / np.maximum(np.linalg.norm(eb, axis=-1, keepdims=True), 1e-12)
        sim = np.sum(na * nb, axis=-1)
        return float(sim) if np.ndim(sim) == 0 else sim.astype(np.float32)

    def embed_photo(self, photo, points=None, select="largest", detector=None, flip=None):
        """Detect (MTCNN) and align the face in an unaligned photo, then embed it.

        Args:
            photo: (H, W, 3) uint8 RGB array, or an image file path.
            points: optional (5, 2) known landmarks (skips detection).
            select: ``largest`` or ``central`` when several faces are found.
            detector: an ``MTCNNDetector`` to reuse (default: one created on first use).

        Returns:
            (embedding (E,) float32 L2-normalised, ``gluonface.align.AlignResult``).
        """
        from gluonface.align import align_image
        if isinstance(photo, (str, os.PathLike)):
            from gluonface.align.image import UnreadableImage, read_rgb
            try:
                photo = read_rgb(str(photo))
            except UnreadableImage as exc:
                raise GluonFaceError(f"cannot read {photo}: {exc}; fix: pass a JPEG/PNG photo") from exc
        if points is None and detector is None:
            if self._detector is None:
                from gluonface.align.mtcnn import MTCNNDetector
                self._detector = MTCNNDetector()
            detector = self._detector
        if self.input_size[0] != self.input_size[1]:
            raise GluonFaceError(f"alignment makes square crops; this model expects {self.input_size}; fix: "
                                 "align the photo yourself and call embed()")
        result = align_image(np.asarray(photo), size=self.input_size[0], points=points, detector=detector,
                             select=select)
        if not result.aligned:
            raise GluonFaceError(f"no usable face in the photo ({result.status}: {result.reason}); fix: use a "
                                 "photo with a visible frontal face or give the 5 landmarks")
        return self.embed(result.crop, flip=flip), result
