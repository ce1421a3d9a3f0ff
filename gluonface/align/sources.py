"""What to align: image jobs from a folder tree, a ``.lst`` file or a landmarks file.

A job names the source image, the output path relative to the destination root (same relative path
as the source, POSIX separators) and, when known, its 5 landmarks and/or a face box.
"""
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from gluonface.errors import GluonFaceError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


@dataclass(frozen=True)
class AlignJob:
    """``src`` absolute path; ``rel`` output path relative to DST (POSIX); optional ``points (5, 2)`` and
    ``bbox (4,)`` as tuples (kept hashable and cheap to pickle)."""
    src: str
    rel: str
    points: Optional[Tuple[Tuple[float, float], ...]] = None
    bbox: Optional[Tuple[float, float, float, float]] = None


def walk_images(root):
    """Relative POSIX paths of every image under ``root`` (by extension), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def _as_points(array):
    return tuple((float(x), float(y)) for x, y in np.asarray(array, dtype=np.float64).reshape(5, 2))


def tree_jobs(src_root, landmarks=None):
    """Jobs for every image under ``src_root``; ``landmarks`` maps relpath → ``(5, 2)`` points (or None)."""
    if not os.path.isdir(src_root):
        raise GluonFaceError(f"source {src_root!r} is not a directory; fix: pass the root of an image tree "
                             f"(identity folders of images) or use --lst FILE")
    rels = walk_images(src_root)
    if not rels:
        raise GluonFaceError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src_root!r}; "
                             f"fix: point SRC at the folder that holds the identity folders")
    jobs = []
    for rel in rels:
        pts = None
        if landmarks is not None and rel in landmarks:
            pts = _as_points(landmarks[rel])
        jobs.append(AlignJob(os.path.join(src_root, *rel.split("/")), rel, pts))
    return jobs


def _rel_output(path, src_root):
    """Output relpath for a .lst entry: relative to SRC when inside it, else the path minus its anchor."""
    full = os.path.normpath(os.path.join(src_root, path))
    rel = os.path.relpath(full, src_root)
    if rel.startswith(".."):
        rel = os.path.splitdrive(full)[1].lstrip("/\\")
    return rel.replace(os.sep, "/"), full


def parse_lst_line(line, lineno, path):
    """One ``.lst`` line → ``(image path, bbox or None, points or None)``.

    Accepted layouts (tab-separated): face2rec2 ``flag  path  label  [x1 y1 x2 y2  [10 numbers:
    x1..x5 then y1..y5]]`` and im2rec ``index  label(s)  path``.
    """
    vec = line.rstrip("\n").split("\t")
    where = f"{path}:{lineno}"
    if len(vec) < 3:
        raise GluonFaceError(f"{where}: expected at least 3 tab-separated fields, got {len(vec)}; fix: "
                             f"use 'flag<TAB>path<TAB>label[<TAB>bbox(4)[<TAB>landmarks(10)]]'")
    if vec[-1].lower().endswith(IMAGE_EXTENSIONS) and not vec[1].lower().endswith(IMAGE_EXTENSIONS):
        return vec[-1], None, None  # im2rec layout: the path is the last field
    image, extra = vec[1], vec[3:]
    try:
        numbers = [float(v) for v in extra]
    except ValueError:
        raise GluonFaceError(f"{where}: bbox/landmark fields must be numbers; fix: the face2rec2 layout "
                             f"is flag, path, label, x1 y1 x2 y2, then x1..x5 y1..y5") from None
    if len(numbers) not in (0, 4, 14):
        raise GluonFaceError(f"{where}: {len(numbers)} numbers after the label; expected 0, 4 (bbox) "
                             f"or 14 (bbox + 10 landmark numbers x1..x5 y1..y5)")
    bbox = tuple(numbers[:4]) if numbers else None
    points = None
    if len(numbers) == 14:
        lm = np.asarray(numbers[4:], dtype=np.float64)
        points = np.stack([lm[:5], lm[5:]], axis=1)
    return image, bbox, points


def lst_jobs(lst_path, src_root):
    """Jobs from a ``.lst`` file; relative image paths are taken relative to ``src_root``."""
    if not os.path.isfile(lst_path):
        raise GluonFaceError(f"list file {lst_path!r} does not exist; fix: pass an existing .lst")
    jobs, seen = [], set()
    with open(lst_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            image, bbox, points = parse_lst_line(line, lineno, lst_path)
            rel, full = _rel_output(image, src_root)
            if rel in seen:
                continue  # the same photo listed twice (e.g. under two labels) is aligned once
            seen.add(rel)
            jobs.append(AlignJob(full, rel, _as_points(points) if points is not None else None, bbox))
    if not jobs:
        raise GluonFaceError(f"{lst_path!r} lists no images; fix: one line per image")
    return jobs


def read_landmarks_file(path):
    """Read a landmarks TSV (format in ARCHITECTURE.md) → ``{relpath: (5, 2) float32}``."""
    if not os.path.isfile(path):
        raise GluonFaceError(f"landmarks file {path!r} does not exist; fix: pass the landmarks.tsv that "
                             f"`gluonface synth --raw` or `gluonface align` wrote")
    from gluonface.data.landmarks import read_landmarks
    return read_landmarks(path)
