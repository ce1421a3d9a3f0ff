"""The landmarks file: ``landmarks.tsv`` at the root of an image tree, 5 ArcFace-order points per image.

Format: a header ``path\\tx1\\ty1\\t...\\tx5\\ty5``, then one line per image: the POSIX path relative to the
tree root and 10 numbers in pixels (image-left eye, image-right eye, nose tip, image-left mouth corner,
image-right mouth corner). Written by ``gluonface synth`` and ``gluonface align``; read by ``align``.
"""
from typing import Dict, Mapping

import numpy as np

from gluonface.errors import GluonFaceError

HEADER = "path\t" + "\t".join(f"x{i}\ty{i}" for i in range(1, 6))


def write_landmarks(path: str, mapping: Mapping[str, np.ndarray]) -> None:
    """Write ``{relpath: (5, 2) float}`` as a landmarks file, rows sorted by path (deterministic bytes)."""
    lines = [HEADER]
    for rel in sorted(mapping):
        pts = np.asarray(mapping[rel], dtype=np.float64).reshape(5, 2)
        if "\t" in rel or "\n" in rel:
            raise ValueError(f"path {rel!r} contains a tab or newline and cannot be stored in {path}")
        lines.append(rel.replace("\\", "/") + "\t" + "\t".join(f"{v:.3f}" for v in pts.ravel()))
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def read_landmarks(path: str) -> Dict[str, np.ndarray]:
    """Read a landmarks file into ``{relpath: (5, 2) float32}``.

    Raises:
        GluonFaceError: missing file, wrong header, or a malformed line (the message names file and line).
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise GluonFaceError(f"no landmarks file {path}; fix: create it with `gluonface synth` or "
                             f"`gluonface align`, or write '{HEADER.replace(chr(9), ' ')}' TSV lines") from None
    if not lines or lines[0].split("\t")[0] != "path":
        raise GluonFaceError(f"{path}: the first line must be the header 'path<TAB>x1<TAB>y1...'; fix: add it")
    out = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 11:
            raise GluonFaceError(f"{path}:{n}: expected a path and 10 numbers separated by tabs, got "
                                 f"{len(fields)} fields; fix: correct or delete that line")
        try:
            pts = np.array([float(v) for v in fields[1:]], dtype=np.float32).reshape(5, 2)
        except ValueError:
            raise GluonFaceError(f"{path}:{n}: a coordinate is not a number; fix: correct that line") from None
        out[fields[0]] = pts
    return out
