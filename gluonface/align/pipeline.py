"""One image in, one aligned crop (or a reason why not) out: face choice + similarity warp.

Shared by ``gluonface align`` (``batch.py``) and ``gluonface pack --align`` (``preprocess.py``).
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from gluonface.align.transform import align_face, check_points

SELECT_MODES = ("largest", "central")

# Statuses. 'ok' and 'multiple' produce a crop; the others do not ('error': an unexpected exception on
# one image, reported with its message by the batch runner).
OK, MULTIPLE, NO_FACE, TOO_SMALL, BAD_POINTS, UNREADABLE, NO_LANDMARKS, ERROR = (
    "ok", "multiple", "no_face", "too_small", "bad_points", "unreadable", "no_landmarks", "error")


@dataclass
class AlignResult:
    """Outcome for one image.

    ``status`` is one of ok, multiple (aligned, several faces seen), no_face, too_small, bad_points,
    unreadable, no_landmarks; ``reason`` explains anything but ok; ``crop`` is ``(h, w, 3) uint8`` or None;
    ``points`` the ``(5, 2) float64`` source points used; ``matrix`` the ``(2, 3)`` warp; ``num_faces`` the
    detector's count (-1 when landmarks were given).
    """
    status: str
    reason: str = ""
    crop: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None
    matrix: Optional[np.ndarray] = None
    num_faces: int = -1

    @property
    def aligned(self):
        return self.crop is not None


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def choose_face(faces, image_shape, select="largest", bbox=None):
    """Index of the face to keep among ``faces`` (list of ``mtcnn.Face``, non-empty).

    ``largest``: the biggest box. ``central``: the box whose centre is nearest the image centre (ties: the
    bigger). With ``bbox`` (x1, y1, x2, y2, e.g. from a .lst): the best-overlapping box; -1 if none
    overlaps it by IoU >= 0.3.
    """
    if bbox is not None:
        overlaps = [_iou(f.box, bbox) for f in faces]
        best = int(np.argmax(overlaps))
        return best if overlaps[best] >= 0.3 else -1
    if select == "largest":
        return int(np.argmax([f.size for f in faces]))
    if select == "central":
        cy, cx = image_shape[0] / 2.0, image_shape[1] / 2.0
        dist = [np.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy) for f in faces]
        return min(range(len(faces)), key=lambda k: (round(dist[k], 3), -faces[k].size))
    raise ValueError(f"select must be one of {SELECT_MODES}, got {select!r}")


def align_image(image, *, size=112, points=None, detector=None, select="largest", bbox=None):
    """Align one ``(H, W, 3) uint8`` RGB image.

    Args:
        points: ``(5, 2)`` known landmarks (then no detector is used), or None to detect.
        detector: an ``MTCNNDetector`` (needed when ``points`` is None).
        select: ``largest`` or ``central``, which face to keep when several are found.
        bbox: optional ``(4,)`` box hint (x1, y1, x2, y2): keep the detection overlapping it most.
    Returns:
        :class:`AlignResult`. The crop is cut from the full-resolution image even when the detector
        worked on a downscaled copy.
    """
    if points is not None:
        try:
            points = check_points(points)
        except ValueError as exc:
            return AlignResult(BAD_POINTS, f"unusable landmarks: {exc}")
        crop, matrix = align_face(image, points, size)
        return AlignResult(OK, "", crop, points, matrix)
    h, w = image.shape[:2]
    if min(h, w) < detector.min_face:
        return AlignResult(TOO_SMALL, f"image is {w}x{h}, smaller than the minimum face size "
                                      f"{detector.min_face:g} px (lower --min-face to try it)", num_faces=0)
    faces = detector.detect(image)
    if not faces:
        return AlignResult(NO_FACE, f"no face found (min face {detector.min_face:g} px)", num_faces=0)
    pick = choose_face(faces, image.shape, select, bbox)
    if pick < 0:
        return AlignResult(NO_FACE, f"{len(faces)} face(s) found but none overlaps the given box "
                                    f"{np.round(bbox, 1).tolist()}", num_faces=len(faces))
    face = faces[pick]
    try:
        crop, matrix = align_face(image, face.points, size)
    except ValueError as exc:
        return AlignResult(BAD_POINTS, f"detector landmarks unusable: {exc}", num_faces=len(faces))
    if len(faces) == 1:
        return AlignResult(OK, "", crop, face.points.astype(np.float64), matrix, 1)
    how = "the one matching the given box" if bbox is not None else f"the {select} one"
    scores = ", ".join(f"{f.score:.2f}" for f in faces)
    reason = (f"{len(faces)} faces (scores {scores}); kept {how}: "
              f"{face.size:.0f} px at ({face.box[0]:.0f}, {face.box[1]:.0f})")
    return AlignResult(MULTIPLE, reason, crop, face.points.astype(np.float64), matrix, len(faces))
