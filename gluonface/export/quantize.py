"""oneDNN (MKLDNN) post-training INT8 quantisation of an exported embedding symbol.

``mx.contrib.quantization.quantize_model_mkldnn`` fuses conv + BN (+ activation), inserts quantize /
dequantize nodes and, with calibration, fixes every quantised layer's input range from real images so no
run-time min/max reduction is needed. Calibration images come from a training rec: aligned faces are the
distribution the model will see. The result is again a symbol checkpoint (``PREFIX-int8-symbol.json`` +
``-0000.params``) that loads with ``gluon.SymbolBlock.imports`` on a CPU MXNet build with MKLDNN.
"""
import numpy as np

from gluonface.errors import GluonFaceError

CALIB_MODES = ("naive", "entropy")


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
