"""Box arithmetic for the MTCNN cascade (pure NumPy).

Boxes are ``(N, 4) float`` arrays ``x1, y1, x2, y2`` in continuous pixel coordinates of the input image
(pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``), so a box's width is ``x2 - x1``.
"""
import cv2
import numpy as np


def box_area(boxes):
    """Areas of ``(N, 4)`` boxes, ``(N,)``; degenerate boxes count as 0."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def pairwise_overlap(a, b, mode="union"):
    """Overlap matrix ``(len(a), len(b))``: intersection over union, or over the smaller box (``min``)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a, area_b = box_area(a)[:, None], box_area(b)[None, :]
    denom = np.minimum(area_a, area_b) if mode == "min" else area_a + area_b - inter
    return inter / np.maximum(denom, 1e-12)


def nms(boxes, scores, threshold, mode="union"):
    """Greedy non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` float. scores: ``(N,)`` float. threshold: overlap above which a lower-scored box
        is dropped. mode: ``union`` (IoU) or ``min`` (intersection over the smaller box).
    Returns:
        ``(K,) int64`` indices of the kept boxes, highest score first.
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    # One vector step per kept box (P-Net yields hundreds of candidates per level; this loop is hot).
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        iw = np.maximum(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0)
        inter = iw * ih
        denom = np.minimum(area[best], area[rest]) if mode == "min" else area[best] + area[rest] - inter
        order = rest[inter <= threshold * np.maximum(denom, 1e-12)]
    return np.asarray(keep, dtype=np.int64)


def apply_regression(boxes, offsets):
    """Shift each edge by its offset times the box size: ``(N, 4)`` boxes, ``(N, 4)`` offsets → ``(N, 4)``."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + offsets * np.concatenate([w, h, w, h], axis=1)


def to_square(boxes):
    """Grow each box to a square around the same centre (side = the longer edge)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def crop_patches(image, boxes, size):
    """Cut each box out of ``image`` (zero outside it) and resize to ``size x size``.

    Args:
        image: ``(H, W, 3) float32`` normalised image. boxes: ``(N, 4)`` float. size: output side.
    Returns:
        ``(N, 3, size, size) float32`` (NCHW, ready for R-Net / O-Net).
    """
    h, w = image.shape[:2]
    out = np.zeros((len(boxes), 3, size, size), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(np.int64)):
        bw, bh = max(int(x2 - x1), 1), max(int(y2 - y1), 1)
        patch = np.zeros((bh, bw, 3), dtype=np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    return out
