"""Sub-center ArcFace data cleaning: dominant sub-centre per class and samples far from it.

After training ``subcenter_arcface`` (K sub-centres per class) on noisy data, each sample is assigned to
its closest sub-centre within its own class; the sub-centre holding most of a class's samples is that
class's *dominant* one. Samples whose angle to the dominant sub-centre exceeds a threshold (insightface
drops > 75°) are likely label noise.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SubcenterReport:
    """Result of ``subcenter_report``.

    Attributes:
        dominant: ``(C,)`` int64, index in ``[0, K)`` of each class's dominant sub-centre (0 for classes
            without samples).
        counts: ``(C, K)`` int64, samples assigned to each sub-centre.
        angle: ``(N,)`` float64 degrees between each sample and its class's dominant sub-centre.
        beyond: ``(N,)`` bool, ``angle > threshold``.
        num_beyond: int, ``beyond.sum()``.
    """
    dominant: np.ndarray
    counts: np.ndarray
    angle: np.ndarray
    beyond: np.ndarray
    num_beyond: int


def subcenter_report(embeddings, labels, weight, sub_centers, threshold_deg=75.0):
    """Dominant sub-centres and the samples lying beyond ``threshold_deg`` from them.

    Args:
        embeddings: ``(N, E)`` float array (NumPy or NDArray), not necessarily normalised.
        labels: ``(N,)`` integer class labels in ``[0, C)``.
        weight: ``(C·K, E)`` the loss's ``weight`` (row ``c·K + k`` is sub-centre ``k`` of class ``c``).
        sub_centers: K.
        threshold_deg: angle in degrees.

    Returns:
        ``SubcenterReport``.
    """
    x = _as_numpy(embeddings).astype(np.float64)
    w = _as_numpy(weight).astype(np.float64)
    y = _as_numpy(labels).astype(np.int64).ravel()
    k = int(sub_centers)
    if w.shape[0] % k:
        raise ValueError(f"weight has {w.shape[0]} rows, not a multiple of sub_centers={k}")
    c = w.shape[0] // k
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    w = w.reshape(c, k, -1)
    cos = np.einsum("ne,nke->nk", x, w[y])           # (N, K): cosines to the sample's own sub-centres
    nearest = cos.argmax(axis=1)
    counts = np.zeros((c, k), np.int64)
    np.add.at(counts, (y, nearest), 1)
    dominant = counts.argmax(axis=1)
    cos_dom = np.clip(cos[np.arange(len(y)), dominant[y]], -1.0, 1.0)
    angle = np.degrees(np.arccos(cos_dom))
    beyond = angle > threshold_deg
    return SubcenterReport(dominant, counts, angle, beyond, int(beyond.sum()))


def _as_numpy(a):
    return a.asnumpy() if hasattr(a, "asnumpy") else np.asarray(a)
