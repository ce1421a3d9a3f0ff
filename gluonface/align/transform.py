"""The ArcFace alignment: a least-squares similarity from 5 face points to a template, then a warp.

Points use pixel-index coordinates (the centre of pixel ``(row i, col j)`` is ``(x=j, y=i)``), the
convention of ``cv2.warpAffine`` and of the insightface template below.
"""
import cv2
import numpy as np

from gluonface.errors import GluonFaceError

# insightface's ArcFace template for 112x112 crops (ArcFace point order), in pixels.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def parse_size(size):
    """``112`` / ``"112"`` / ``"112x96"`` / ``(112, 96)`` → ``(height, width)`` ints (height first)."""
    if isinstance(size, str):
        parts = size.lower().split("x")
        try:
            size = tuple(int(p) for p in parts)
        except ValueError:
            size = ()
    elif isinstance(size, (int, np.integer)):
        size = (int(size),)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 8:
        raise GluonFaceError(f"bad crop size {size!r}; fix: give one side (112) or HxW (112x96), >= 8 px")
    return size


def arcface_template(size=112):
    """The 5 template points for a crop of ``size`` (see :func:`parse_size`).

    Square crops follow insightface's ``face_align.estimate_norm``, so that its ``norm_crop`` (what its
    recognition class runs on ``face.kps``) cuts the crops a model was trained on: a side ``S`` that is a
    multiple of 112 gives ``template * S / 112``; otherwise a multiple of 128 gives ``template * S / 128``
    moved ``8 * S / 128`` px right (at 128: the 112 template in a 16 px wider and taller canvas, centred
    horizontally, top-aligned). Other sizes scale the template by ``height / 112`` and centre it
    horizontally, so 112x96 gives the original ArcFace/SphereFace 112x96 template (x − 8).
    Returns ``(5, 2) float64``.
    """
    height, width = parse_size(size)
    if height == width and height % 112 and height % 128 == 0:
        scale = height / 128.0
        points = ARCFACE_112 * scale
        points[:, 0] += 8.0 * scale
        return points
    scale = height / 112.0
    points = ARCFACE_112 * scale
    points[:, 0] += (width - 112.0 * scale) / 2.0
    return points


def umeyama_similarity(src, dst):
    """Least-squares similarity ``dst ≈ s·R·src + t`` (rotation, no reflection), after Umeyama (1991).

    Args:
        src, dst: ``(N, 2)`` float arrays of corresponding points, N >= 2, ``src`` not all equal.
    Returns:
        ``(2, 3) float64`` matrix ``[s·R | t]`` (the form ``cv2.warpAffine`` takes).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (N>=2, 2) point arrays; got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    cs, cd = src - mu_s, dst - mu_d
    var_s = (cs ** 2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("source points coincide; a similarity is undefined")
    cov = cd.T @ cs / len(src)
    u, sig, vt = np.linalg.svd(cov)
    # Flip the last axis when the best orthogonal map would be a reflection.
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def transform_points(matrix, points):
    """Apply a ``(2, 3)`` affine matrix to ``(N, 2)`` points → ``(N, 2) float64``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def check_points(points):
    """Validate face points: ``(5, 2)`` finite, eyes not on top of each other. Returns float64 copy."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"need (5, 2) finite points, got shape {points.shape}")
    if np.linalg.norm(points[1] - points[0]) < 1e-3:
        raise ValueError("the two eye points coincide")
    return points


def align_face(image, points, size=112):
    """Warp ``image`` so that its 5 ``points`` land on the ArcFace template.

    Args:
        image: ``(H, W, C) uint8`` (any channel count OpenCV warps; RGB by convention).
        points: ``(5, 2)`` float, ArcFace order, pixel-index coordinates of ``image``.
        size: crop size (``112``, ``"112x96"``, ``(H, W)``).
    Returns:
        ``(crop (h, w, C) uint8, matrix (2, 3) float64)``; outside the source image the crop is 0.
    """
    height, width = parse_size(size)
    matrix = umeyama_similarity(check_points(points), arcface_template((height, width)))
    crop = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, matrix
