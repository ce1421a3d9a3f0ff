"""``FaceEmbedder``: embeddings from an exported model (symbol, INT8 symbol or ONNX) in three lines.

    emb = FaceEmbedder.from_path("out/model")          # or "out/model.onnx", "out/model-int8"
    e = emb.embed(aligned_uint8_images)                 # (N, E) float32, L2-normalised
    emb.compare(e[0], e[1])                             # cosine similarity
"""
import collections
import json
import os

import numpy as np

from gluonface.errors import GluonFaceError
from gluonface.evaluate.verification import embed_raw, l2_normalize
from gluonface.export.names import INPUT_NAME
from gluonface.export.symbol import check_input, check_shapes, load_checkpoint

DEFAULT_INPUT_SIZE = (112, 112)


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


def bound_forward(sym, params, ctx, keep=4):
    """``f(x (B, 3, H, W) float32) -> (B, E) numpy`` running ``sym`` with fixed ``params`` on ``ctx``.

    One executor per batch shape (the ``keep`` most recent), bound to the parameter arrays and to an input
    array the batch is copied into: at batch 1 this costs ~0.3 ms less per call than a hybridized
    SymbolBlock fed a new ``mx.nd.array`` (Gluon's per-call bookkeeping and a Python-side copy).
    """
    import mxnet as mx
    aux_names = set(sym.list_auxiliary_states())
    args = {n: v.as_in_context(ctx) for n, v in params.items() if n not in aux_names}
    aux = {n: v.as_in_context(ctx) for n, v in params.items() if n in aux_names}
    executors = collections.OrderedDict()

    def forward(x):
        ex = executors.pop(x.shape, None)
        if ex is None:
            ex = sym.bind(ctx, dict(args, **{INPUT_NAME: mx.nd.empty(x.shape, ctx=ctx)}), grad_req="null",
                          aux_states=aux)
        executors[x.shape] = ex
        while len(executors) > keep:
            executors.popitem(last=False)
        ex.arg_dict[INPUT_NAME]._sync_copyfrom(x)  # mx.nd.array(x) costs ~0.25 ms of Python at batch 1
        return ex.forward(is_train=False)[0].asnumpy()
    return forward


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
                 input_spec=None):
        self._forward = forward
        self.input_spec = input_spec
        self.input_size = tuple(input_size)
        self.kind = kind
        self.info = dict(info or {})
        self.flip = flip
        self._detector = None

    @classmethod
    def from_path(cls, path, ctx=None, flip=True, threads=None):
        """Load ``PREFIX`` (symbol or INT8 checkpoint), ``PREFIX-symbol.json`` or ``MODEL.onnx``.

        Args:
            ctx: MXNet context for symbol models (default cpu).
            threads: onnxruntime intra-op threads (ONNX only).
        """
        path = str(path)
        info = read_export_info(path)
        size = tuple(info.get("input_size", DEFAULT_INPUT_SIZE))
        if path.endswith(".onnx"):
            return cls._from_onnx(path, size, info, flip, threads)
        sym, params, _, _ = load_checkpoint(path)
        kind = "int8" if "_contrib_quantize" in sym.tojson() else "symbol"
        if kind == "symbol":
            check_shapes(sym, params, size, path)
        return cls._from_symbol(sym, params, size, kind, info, flip, ctx, path)

    @classmethod
    def _from_onnx(cls, path, size, info, flip, threads):
        """An onnxruntime session fed what the model's input convention asks (``convention.onnx_input_spec``)."""
        from gluonface.export.convention import onnx_input_spec
        from gluonface.export.onnx import onnx_session
        sess = onnx_session(path, threads)
        inp = sess.get_inputs()[0]
        if len(inp.shape) == 4 and all(isinstance(d, int) for d in inp.shape[2:]):
            size = tuple(inp.shape[2:])
        spec = onnx_input_spec(path, sess.get_modelmeta().custom_metadata_map)
        mean, inv_std, bgr = np.float32(spec["mean"]), np.float32(1.0 / spec["std"]), spec["color_order"] == "BGR"

        def forward(x):
            x = check_input(x, size)
            if bgr:
                x = np.ascontiguousarray(x[:, ::-1])
            if (mean, inv_std) != (0.0, 1.0):
                x = (x - mean) * inv_std
            return sess.run(None, {inp.name: x})[0]
        return cls(forward, size, "onnx", info, flip, input_spec=spec)

    @classmethod
    def from_net(cls, net, input_size=DEFAULT_INPUT_SIZE, ctx=None, flip=True):
        """Embed with a Gluon network in memory, run as an exported symbol runs (traced, folded, hybridized).

        Args:
            net: initialised HybridBlock, (B, 3, H, W) float32 raw RGB -> (B, E), e.g. ``load_backbone``'s.
            input_size: (H, W) of the aligned faces.
        """
        from gluonface.export.symbol import embedding_symbol
        sym, arg, aux = embedding_symbol(net)
        return cls._from_symbol(sym, dict(arg, **aux), tuple(input_size), "gluon", {}, flip, ctx,
                                type(net).__name__)

    @classmethod
    def _from_symbol(cls, sym, params, size, kind, info, flip, ctx, source):
        """Fold a float32 graph for inference (``gluonface.export.fold``) and bind it on ``ctx``."""
        import mxnet as mx
        from gluonface.export.fold import fold_for_inference, lower_for_onednn
        ctx = ctx or mx.cpu()
        if kind != "int8":  # INT8 graphs come out of quantisation already fused
            sym, arg, aux = fold_for_inference(sym, params, {}, (1, 3) + size)
            if ctx.device_type == "cpu" and mx.runtime.Features().is_enabled("MKLDNN"):
                sym, arg, aux = lower_for_onednn(sym, arg, aux, (1, 3) + size)
                sym = sym.optimize_for("MKLDNN")  # fuse conv + activation / sum, as Module does by default
            params = dict(arg, **aux)
        forward = bound_forward(sym, params, ctx)
        try:
            forward(np.zeros((1, 3) + size, np.float32))
        except mx.base.MXNetError as exc:
            raise GluonFaceError(f"{source} does not run on (1, 3, {size[0]}, {size[1]}) input "
                                 f"({str(exc).splitlines()[0][:200]}); fix: use the symbol and params files "
                                 "written together by `gluonface export` (a params file of another network "
                                 "gives wrong shapes), and check input_size in export.json") from exc
        return cls(forward, size, kind, info, flip)

    def __call__(self, x):
        """Raw forward pass: (B, 3, H, W) float32 raw RGB -> (B, E) float32 (not normalised)."""
        return np.asarray(self._forward(check_input(x, self.input_size)), dtype=np.float32)

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
