"""Contact sheets (PNG): sample identities of a rec, or sample pairs of a ``.bin``."""
import os
from typing import Sequence

import cv2
import numpy as np

_TILE = 112
_LABEL_W = 90


def _tile(rgb: np.ndarray) -> np.ndarray:
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if bgr.shape[:2] != (_TILE, _TILE):
        bgr = cv2.resize(bgr, (_TILE, _TILE), interpolation=cv2.INTER_AREA)
    return bgr


def _text(img, text, org, colour=(255, 255, 255)):
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)


def _save(path: str, sheet: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, sheet):
        from gluonface.errors import GluonFaceError
        raise GluonFaceError(f"cannot write {path}; fix: use a writable path ending in .png or .jpg")


def identity_sheet(dataset, path: str, identities: int = 8, per_identity: int = 8, seed: int = 0,
                   names: Sequence[str] = ()) -> int:
    """Write a grid: one row per sampled identity (label and name at the left), up to ``per_identity``
    images each. Returns the number of rows."""
    rng = np.random.default_rng(seed)
    labels = sorted(dataset.identity_ranges)
    pick = sorted(rng.choice(len(labels), min(identities, len(labels)), replace=False).tolist())
    rows = []
    for k in pick:
        label = labels[k]
        start, end = dataset.identity_ranges[label]
        row = np.full((_TILE, _LABEL_W + per_identity * _TILE, 3), 32, np.uint8)
        _text(row, f"label {label}", (4, 20))
        if label < len(names):
            _text(row, str(names[label])[:12], (4, 40))
        _text(row, f"{end - start} imgs", (4, 60))
        for j, pos in enumerate(range(start, min(end, start + per_identity))):
            row[:, _LABEL_W + j * _TILE:_LABEL_W + (j + 1) * _TILE] = _tile(dataset[pos][0])
        rows.append(row)
    _save(path, np.concatenate(rows, 0))
    return len(rows)


def pairs_sheet(images: np.ndarray, issame: np.ndarray, path: str, pairs: int = 16, columns: int = 4,
                seed: int = 0) -> int:
    """Write a grid of sampled pairs (two images side by side, green frame = same identity, red = not).

    Args:
        images: ``(2P, H, W, 3) uint8`` RGB in pair order. issame: ``(P,) bool``.
    Returns:
        the number of pairs shown.
    """
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(issame), min(pairs, len(issame)), replace=False).tolist())
    cell_w, cell_h = 2 * _TILE + 12, _TILE + 28
    rows = (len(chosen) + columns - 1) // columns
    sheet = np.full((rows * cell_h, columns * cell_w, 3), 32, np.uint8)
    for n, p in enumerate(chosen):
        y, x = (n // columns) * cell_h, (n % columns) * cell_w
        colour = (0, 200, 0) if issame[p] else (0, 0, 220)
        sheet[y + 2:y + 2 + _TILE + 8, x + 2:x + 2 * _TILE + 10] = colour
        sheet[y + 6:y + 6 + _TILE, x + 6:x + 6 + _TILE] = _tile(images[2 * p])
        sheet[y + 6:y + 6 + _TILE, x + 6 + _TILE:x + 6 + 2 * _TILE] = _tile(images[2 * p + 1])
        _text(sheet, f"pair {p}: {'same' if issame[p] else 'different'}", (x + 6, y + cell_h - 6))
    _save(path, sheet)
    return len(chosen)
