"""Reading lists of aligned face images from disk in chunks, for the template and identification protocols."""
import os

import numpy as np

from gluonface.errors import GluonFaceError


def read_aligned(path, size):
    """One aligned image file -> (H, W, 3) uint8 RGB; refuses unreadable files and other sizes."""
    import cv2
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise GluonFaceError(f"cannot read image {path}; fix: check the path in the list (relative paths are "
                             "resolved against --image-root)")
    if bgr.shape[:2] != tuple(size):
        raise GluonFaceError(f"{path} is {bgr.shape[1]}x{bgr.shape[0]}; the model expects aligned "
                             f"{size[1]}x{size[0]} faces; fix: align the images first (`gluonface align`)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def iter_image_chunks(paths, root, size, chunk=256):
    """Yield uint8 (b, H, W, 3) RGB chunks of the images at ``root/paths[i]`` in order (bounded memory)."""
    for i in range(0, len(paths), chunk):
        yield np.stack([read_aligned(os.path.join(root, p), size) for p in paths[i:i + chunk]])


def read_table(path, columns, what):
    """Whitespace-separated text table -> list of rows with exactly ``columns`` fields ('#' starts a comment).

    Raises GluonFaceError naming the first bad line.
    """
    if not os.path.isfile(path):
        raise GluonFaceError(f"{what} {path} does not exist; fix: check the path")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != columns:
                raise GluonFaceError(f"{path}:{lineno} has {len(fields)} fields; a {what} line has {columns}; "
                                     "fix: see the format in `gluonface eval --help`")
            rows.append(fields)
    if not rows:
        raise GluonFaceError(f"{what} {path} is empty; fix: give at least one line")
    return rows
