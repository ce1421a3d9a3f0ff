"""oneDNN (MKLDNN) post-training INT8 quantisation of an exported embedding symbol.

``mx.contrib.quantization.quantize_model_mkldnn`` fuses conv + BN (+ activation), inserts quantize /
dequantize nodes and, with calibration, fixes every quantised layer's input range from real images so no
run-time min/max reduction is needed. Calibration images come from a training rec: aligned faces are the
distribution the model will see. The result is again a symbol checkpoint (``PREFIX-int8-symbol.json`` +
``-0000.params``) that loads with ``gluon.SymbolBlock.imports`` on a CPU MXNet build with MKLDNN.
"""
import numpy as np

from gluonface.errors import GluonFaceError
from gluonface.evaluate.verification import row_cosines

CALIB_MODES = ("naive", "entropy")
# Every calibration image's INT8 embedding must keep this cosine to float32's. Measured on the demo model:
# 0.995-0.999 on real faces (AVX2 and AVX-512 CPUs); a broken quantisation lands far below (MobileFaceNet's
# folded graph gave cosine ~0). At 0.99 the embeddings differ by 8 degrees, well inside the margin between
# matching and non-matching pairs of a trained model.
INT8_MIN_COSINE = 0.99


def calibration_images(rec, num_images=256, seed=0, image_size=(112, 112)):
    """Draw ``num_images`` aligned faces from a rec, spread over the whole file.

    Args:
        rec: a rec prefix / ``.rec`` path / directory holding ``train.rec`` (see ``FaceRecordDataset``).
        num_images: how many (fewer if the rec is smaller).
        seed: which images (a seeded sample without replacement, sorted for sequential reads).
        image_size: (H, W) the model expects; a rec of another size is refused.

    Returns:
        uint8 (n, H, W, 3) RGB.
    """
    from gluonface.data.record import FaceRecordDataset
    ds = FaceRecordDataset(str(rec))
    if tuple(ds.image_size) != tuple(image_size):
        raise GluonFaceError(f"calibration rec {rec} holds {ds.image_size[0]}x{ds.image_size[1]} images; the "
                             f"model expects {image_size[0]}x{image_size[1]}; fix: calibrate with the rec the "
                             "model was trained on")
    if len(ds) == 0:
        raise GluonFaceError(f"calibration rec {rec} is empty; fix: pass a rec with images (`gluonface pack`)")
    n = min(int(num_images), len(ds))
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    return np.stack([ds[int(i)][0] for i in idx])


def quantize_symbol(sym, arg_params, aux_params, calib_images, calib_mode="naive", batch_size=32,
                    exclude=()):
    """Quantise a float32 embedding symbol to INT8 with calibration.

    Args:
        sym, arg_params, aux_params: float32 checkpoint (``embedding_symbol``), input ``data``.
        calib_images: uint8 (n, H, W, 3) RGB aligned faces (``calibration_images``).
        calib_mode: ``naive`` (min/max of activations; fast) or ``entropy`` (KL-optimal thresholds; ~10x
            slower to calibrate).
        exclude: symbol node names kept in float32.

    Returns:
        (qsym, qarg_params, aux_params).
    """
    import mxnet as mx
    from mxnet.contrib.quantization import quantize_model_mkldnn
    if not mx.runtime.Features().is_enabled("MKLDNN"):
        raise GluonFaceError("this MXNet build has no MKLDNN (oneDNN); fix: install the CPU wheel "
                             "`mxnet==1.9.1`, which includes it, for INT8 export")
    if calib_mode not in CALIB_MODES:
        raise GluonFaceError(f"unknown calibration mode {calib_mode!r}; fix: use one of {CALIB_MODES}")
    calib_images = np.asarray(calib_images)
    if calib_images.ndim != 4 or calib_images.shape[-1] != 3 or len(calib_images) == 0:
        raise GluonFaceError(f"calibration images have shape {calib_images.shape}; expected (n, H, W, 3) with "
                             "n >= 1; fix: pass uint8 RGB aligned faces")
    data = calib_images.transpose(0, 3, 1, 2).astype(np.float32)
    batch_size = min(batch_size, len(data))
    # Whole batches only: quantize_model binds one shape; a padded last batch would skew the ranges.
    usable = len(data) // batch_size * batch_size
    it = mx.io.NDArrayIter(data[:usable], batch_size=batch_size)
    return quantize_model_mkldnn(sym, arg_params, aux_params, data_names=("data",), label_names=(),
                                 ctx=mx.cpu(), excluded_sym_names=list(exclude), calib_mode=calib_mode,
                                 calib_data=it, num_calib_examples=usable, quantized_dtype="auto",
                                 quantize_mode="smart")


def check_against_float32(int8_forward, fp32_forward, images, min_cosine=INT8_MIN_COSINE, batch_size=32):
    """Compare INT8 and float32 embeddings of the calibration images; refuse the INT8 model below the bar.

    Args:
        int8_forward, fp32_forward: callables (n, 3, H, W) float32 raw pixels -> (n, E) embeddings.
        images: uint8 (n, H, W, 3) RGB aligned faces (``calibration_images``).
        min_cosine: the lowest per-image cosine accepted.

    Returns:
        {'min_cosine', 'mean_cosine', 'images'}.

    Raises:
        GluonFaceError: some image's INT8 embedding is below ``min_cosine`` to float32's.
    """
    images = np.asarray(images)
    cos = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].transpose(0, 3, 1, 2).astype(np.float32)
        cos.append(row_cosines(int8_forward(x), fp32_forward(x)))
    cos = np.concatenate(cos)
    report = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "images": int(len(cos))}
    if report["min_cosine"] < min_cosine:
        raise GluonFaceError(
            f"the INT8 model's embeddings differ from float32's on the calibration images (min cosine "
            f"{report['min_cosine']:.4f}, mean {report['mean_cosine']:.4f}; bar {min_cosine}); nothing was kept. "
            "fix: calibrate with more images or --calib-mode entropy, or deploy the float32 model")
    return report


def uint8_input_form(sym, params):
    """The INT8 graph fed uint8 pixels: its input quantisation replaced by the pixels themselves.

    ``quantize_model_mkldnn`` calibrates the raw-pixel input to exactly [0, 255], so its first operator,
    ``_contrib_quantize_v2``, turns float32 pixels into uint8 and leaves whole pixel values as they are (it scales
    by 255.5 / 255 before rounding, so fractional values do move). A caller that holds uint8 images (every
    ``FaceEmbedder.embed``) gives them straight to the first INT8 convolution instead: one operator and two
    dtype conversions fewer per call, the same output bit for bit
    (``tests/integration/test_export_run.py::test_int8_takes_uint8_pixels``). Float input keeps the graph as
    it is. The files keep the standard float32 input; this form is built in memory when the model is loaded.

    Args:
        sym, params: an INT8 checkpoint (``quantize_symbol``'s result; ``params`` one dict of arg + aux).

    Returns:
        ``(sym, params)`` whose input ``data`` is uint8, or None when the graph does not start with that one
        quantisation of ``data`` over [0, 255] (then keep the float32 input).
    """
    import json
    import mxnet as mx
    from gluonface.export.names import INPUT_NAME
    # The JSON is edited directly, not through ``graph.SymbolGraph``: that holds every parameter as float64 for
    # folding, which would turn the INT8 graph's int8 weights into floats; only the wiring changes here.
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    data = [i for i, n in enumerate(nodes) if n["op"] == "null" and n["name"] == INPUT_NAME]
    users = [i for i, n in enumerate(nodes) if any(e[0] in data for e in n["inputs"])]
    if len(data) != 1 or len(users) != 1 or nodes[users[0]]["op"] != "_contrib_quantize_v2":
        return None
    q = users[0]
    attrs = nodes[q].get("attrs", {})
    try:
        lo, hi = float(attrs["min_calib_range"]), float(attrs["max_calib_range"])
    except (KeyError, ValueError):
        return None
    if (lo, hi) != (0.0, 255.0) or attrs.get("out_type", "auto") not in ("auto", "uint8"):
        return None
    names = {"min": f"{INPUT_NAME}_uint8_min", "max": f"{INPUT_NAME}_uint8_max"}
    if any(n["name"] in names.values() for n in nodes):
        return None
    first = len(nodes)
    nodes += [{"op": "null", "name": names["min"], "inputs": []}, {"op": "null", "name": names["max"], "inputs": []}]
    graph["arg_nodes"] = list(graph["arg_nodes"]) + [first, first + 1]
    source = {0: [data[0], 0, 0], 1: [first, 0, 0], 2: [first + 1, 0, 0]}
    for n in nodes:
        n["inputs"] = [source[e[1]] if e[0] == q else e for e in n["inputs"]]
    graph["heads"] = [source[h[1]] if h[0] == q else h for h in graph["heads"]]
    graph.pop("node_row_ptr", None)
    # Loading the edited JSON and saving it again drops the orphaned quantize node (symbols hold their heads).
    out = mx.sym.load_json(mx.sym.load_json(json.dumps(graph)).tojson())
    params = dict(params)
    params[names["min"]] = mx.nd.array([0.0])
    params[names["max"]] = mx.nd.array([255.0])
    return out, params

