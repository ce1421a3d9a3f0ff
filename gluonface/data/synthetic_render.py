"""One image of a compiled identity: pose, background, expression, occlusion, blur, lighting and noise.

All of an image's randomness is one vector of ``NUMBERS`` uniforms drawn by the caller and cut into named
parts by :func:`split_numbers`, so an image is a pure function of that vector. The per-pixel work is a
handful of whole-image OpenCV calls: a 2×2 → H×W resize for the background, the face's ~15 anti-aliased
polygon calls, an optional blur, and one ``cv2.transform`` + one ``cv2.multiply`` that apply lighting,
colour cast and noise together.
"""
import functools
import math
from typing import Dict, Tuple

import cv2
import numpy as np

from gluonface.data.synthetic_face import FaceModel

_SUB = 16  # fixed-point sub-pixel factor for cv2 drawing (shift=4)
_PARTS = (("size", 2), ("pose", 4), ("background", 8), ("clutter", 18), ("expression", 9),
          ("occluder", 8), ("light", 2), ("gain", 4), ("blur", 1), ("noise", 3))
_STARTS = np.cumsum([0] + [n for _, n in _PARTS])
_SLICES = {name: slice(a, b) for (name, _), a, b in zip(_PARTS, _STARTS[:-1], _STARTS[1:])}
NUMBERS = int(_STARTS[-1])


def split_numbers(v: np.ndarray) -> Dict[str, np.ndarray]:
    """Cut one image's ``(NUMBERS,)`` uniforms in [0, 1) into its named parts."""
    return {name: v[s] for name, s in _SLICES.items()}


def pose_affine(u: np.ndarray, size: Tuple[int, int], raw: bool) -> np.ndarray:
    """A ``(2, 3)`` canonical → canvas similarity from 4 uniforms: small jitter around the template (aligned)
    or a random position, scale and rotation inside a larger canvas (``raw``)."""
    h, w = size
    u0, u1, u2, u3 = u.tolist()
    if raw:
        scale = min(h, w) / 112.0 * (0.55 + 0.3 * u0)
        angle = math.radians(60 * u1 - 30)
        cx, cy = (0.4 + 0.2 * u2) * w, (0.42 + 0.16 * u3) * h
    else:
        scale = min(h, w) / 112.0 * (0.94 + 0.12 * u0)
        angle = math.radians(14 * u1 - 7)
        cx, cy = w / 2 + (5 * u2 - 2.5) * w / 112, h / 2 + (5 * u3 - 2.5) * h / 112
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    # Rotate and scale about the canonical centre (56, 56) and place it at (cx, cy).
    return np.array([[c, -s, cx - c * 56 + s * 56],
                     [s, c, cy - s * 56 - c * 56]], dtype=np.float64)


def _background(u: np.ndarray, clutter: np.ndarray, h: int, w: int) -> np.ndarray:
    c0, c1, ang = 255 * u[0:3], 255 * u[3:6], 2 * np.pi * u[6]
    # A linear gradient is the bilinear upsampling of its 2×2 corner colours (cheap in OpenCV).
    t = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]) @ [np.cos(ang), np.sin(ang)] * 0.5 + 0.5
    corners = (c0[None] + (c1 - c0)[None] * t[:, None]).reshape(2, 2, 3).astype(np.uint8)
    img = cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR)
    for c in clutter.reshape(3, 6)[:int(u[7] * 4)]:  # clutter so the background is not a flat statistic
        cv2.circle(img, (int(c[0] * w), int(c[1] * h)), int(4 + c[2] * w / 5), (255 * c[3:]).tolist(), -1,
                   cv2.LINE_AA)
    return img


def _expression(model: FaceModel, e: np.ndarray, nuisance: float) -> Tuple[np.ndarray, frozenset]:
    """The per-image scalars of ``TERMS`` and the names of the conditional draw calls that apply."""
    eye_ry0, eye_rx, iris_frac = model.eye
    blink = 1.0 if e[1] > 0.15 * nuisance else 0.2 + 0.5 * e[2]
    eye_ry = max(eye_ry0 * blink, 0.6)
    opening = 3 * e[7] * nuisance if e[6] < 0.3 else 0.0
    scalars = np.array([1.0, eye_ry, (2.4 * e[3] - 1.2) * nuisance, min(eye_rx * iris_frac, eye_ry * 1.1),
                        (3.5 * e[4] - 1.5) * nuisance, 1.0 + (0.16 * e[8] - 0.06) * nuisance,
                        (4 * e[5] - 1.5) * nuisance, opening, (8 * e[0] - 4) * nuisance])
    shown = frozenset(name for name, on in (("eye_open", eye_ry > 1.2), ("mouth_open", opening > 0.8)) if on)
    return scalars, shown


def _draw(img: np.ndarray, model: FaceModel, pts: np.ndarray, scale: float, shown: frozenset) -> None:
    """Every draw call of the face, anti-aliased at 1/16 px, from the already posed points."""
    fixed = np.rint(pts * _SUB).astype(np.int32)
    for op, colour in zip(model.ops, model.colours):
        if op.when is not None and op.when not in shown:
            continue
        polys = [fixed[a:b] for a, b in op.polys]
        if op.thickness == 0:
            cv2.fillPoly(img, polys, colour, cv2.LINE_AA, 4)
        else:
            cv2.polylines(img, polys, op.closed, colour, max(1, int(round(op.thickness * scale))), cv2.LINE_AA, 4)


@functools.lru_cache(maxsize=4)
def _light_bank(side: int) -> np.ndarray:
    """``(side, side, 3)`` float32 planes x/side, y/side and N(0, 1) noise, from a fixed seed."""
    ramp = np.arange(side, dtype=np.float32) / side
    bank = np.empty((side, side, 3), np.float32)
    bank[..., 0], bank[..., 1] = ramp[None, :], ramp[:, None]
    bank[..., 2] = np.random.default_rng(0).standard_normal((side, side), np.float32)
    return bank


def _light_and_noise(img: np.ndarray, parts: Dict[str, np.ndarray], nuisance: float) -> np.ndarray:
    """``img × gain_c × (1 + directional gradient + noise)``, saturated to uint8, in two OpenCV passes.

    A random crop of a fixed bank holds the pixel coordinates and the noise; one 3×4 ``cv2.transform`` turns
    it into the per-channel multiplier (the crop offset folds into the constant term). Noise is thus
    multiplicative, like photon noise: its standard deviation is ``sd`` at mid-grey (128).
    """
    h, w = img.shape[:2]
    side = max(256, 2 << (max(h, w) - 1).bit_length())  # ≥ 2 W: at least W + 1 crop offsets per axis
    bank = _light_bank(side)
    (ang, strength), g, nz = parts["light"], parts["gain"], parts["noise"]
    r = 0.35 * strength * nuisance
    a, b = r * math.cos(2 * math.pi * ang), r * math.sin(2 * math.pi * ang)
    sd = 12.0 * abs(nz[0] - 0.5) * nuisance
    x0, y0 = int(nz[1] * (side - w + 1)), int(nz[2] * (side - h + 1))
    # light = 1 + a (x / w - 0.5) + b (y / h - 0.5) with x = side · X - x0 for the crop's plane X.
    row = [a * side / w, b * side / h, sd / 128 if sd > 0.5 else 0.0, 1 - a * (x0 / w + 0.5) - b * (y0 / h + 0.5)]
    gain = (1 + (0.45 * g[0] - 0.25) * nuisance) * (1 + (0.2 * g[1:] - 0.1) * nuisance)
    light = cv2.transform(bank[y0:y0 + h, x0:x0 + w], gain[:, None] * np.array(row))
    return cv2.multiply(img, light, dtype=cv2.CV_8U)


def render(model: FaceModel, parts: Dict[str, np.ndarray], size: Tuple[int, int], affine: np.ndarray,
           nuisance: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Render one image of an identity.

    Args:
        model: from :func:`gluonface.data.synthetic_face.compile_face`.
        parts: from :func:`split_numbers` (this image's random numbers; the pose is already in ``affine``).
        size: ``(H, W)`` of the output canvas.
        affine: ``(2, 3)`` canonical-frame → canvas map (the pose), from :func:`pose_affine`.
        nuisance: scales expression/lighting/blur/noise/occlusion strength (1 = default).

    Returns:
        ``(image (H, W, 3) uint8 BGR, landmarks (5, 2) float32 canvas pixels, ArcFace order)``.
    """
    h, w = size
    img = _background(parts["background"], parts["clutter"], h, w)
    scalars, shown = _expression(model, parts["expression"], nuisance)
    pts = (scalars @ model.basis).reshape(-1, 2) @ affine[:, :2].T + affine[:, 2]
    _draw(img, model, pts, float(np.hypot(affine[0, 0], affine[1, 0])), shown)
    o = parts["occluder"]
    if o[0] < 0.15 * nuisance:  # a hand/scarf/object patch
        ow, oh = int((0.15 + 0.25 * o[1]) * w), int((0.15 + 0.2 * o[2]) * h)
        x0, y0 = int(o[3] * (w - ow)), int(h // 3 + o[4] * (h - oh - h // 3))
        cv2.rectangle(img, (x0, y0), (x0 + ow, y0 + oh), (255 * o[5:8]).tolist(), -1)
    blur = parts["blur"][0]
    if blur < 0.5:
        sigma = (0.3 + 1.6 * blur) * nuisance + 1e-3
        # 5×5 (3×3 below σ 0.6) instead of OpenCV's 6σ + 1 width: half the cost or less, and the cut tails
        # of a blur this small (σ ≤ 1.1 at nuisance 1) carry little weight.
        k = 3 if sigma < 0.6 else 5
        img = cv2.GaussianBlur(img, (k, k), sigma)
    return _light_and_noise(img, parts, nuisance), pts[model.landmarks].astype(np.float32)
