"""The batched read path: encoded records → decode → augment → NCHW float32 RGB, written in place."""
from typing import Optional

import cv2
import numpy as np

from gluonface.data.transforms import AugmentConfig, augment, sample_uniforms
from gluonface.errors import GluonFaceError


def fill_batch(dataset, indices: np.ndarray, out_data: np.ndarray, out_label: np.ndarray, *, seed: int,
               epoch: int, augment_cfg: Optional[AugmentConfig], normalize: bool) -> None:
    """Decode ``dataset`` samples ``indices`` into preallocated buffers.

    Args:
        dataset: a ``FaceRecordDataset`` (``read_raw``, ``image_size``, ``paths``, ``record_key``).
        indices: ``(B,) int64`` dataset positions.
        out_data: ``(B, 3, H, W) float32``, filled with RGB pixels (0..255, or (x − 127.5)/128 if
            ``normalize``).
        out_label: ``(B,) float32``, filled with class labels.
        seed, epoch: with the dataset index, the only inputs of the augmentation randomness.
    """
    h, w = out_data.shape[2:]
    uniforms = sample_uniforms(seed, epoch, indices) if augment_cfg is not None else None
    for i, idx in enumerate(indices.tolist()):
        buf, label = dataset.read_raw(idx)
        bgr = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise GluonFaceError(f"{dataset.paths.rec}: record {dataset.record_key(idx)} (position {idx}) does "
                                 f"not decode as an image; fix: re-pack with `gluonface pack SRC "
                                 f"{dataset.paths.prefix}`")
        if bgr.shape[0] != h or bgr.shape[1] != w:
            bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
        if augment_cfg is not None:
            bgr = augment(bgr, augment_cfg, uniforms[i], bgr=True)
        # BGR → RGB and HWC → CHW in one strided copy (NumPy casts to float32 on assignment).
        out_data[i] = bgr[:, :, ::-1].transpose(2, 0, 1)
        out_label[i] = label
    if normalize:
        out_data -= np.float32(127.5)
        out_data *= np.float32(1.0 / 128.0)
