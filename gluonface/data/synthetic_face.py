"""Procedural face-like images: per-identity geometry and colouring, per-image pose/lighting/nuisance.

Everything is drawn in a canonical 112×112 frame whose eyes, nose and mouth sit near the ArcFace template,
then mapped by a per-image pose (in-plane rotation, scale, shift and a small yaw that moves features by
their depth). Identity lives in geometry (face shape, eye spacing/size/shape, brows, nose, mouth, hair
style, glasses, beard, moles): strong and consistent. Per-image colour (background, lighting, colour cast)
varies more than skin colour between identities, so the mean colour of an image says little about who it is.
"""
import functools
from typing import Dict, Tuple

import cv2
import numpy as np

# ArcFace 112×112 template (eye centres, nose tip, mouth corners), image-left first.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
_CX = 56.0
_SUB = 16  # fixed-point sub-pixel factor for cv2 drawing (shift=4)


def identity_params(rng: np.random.Generator) -> Dict:
    """Draw one identity's fixed appearance (canonical-frame pixels, colours as BGR floats 0..255)."""
    u = rng.uniform
    tone = u()  # dark to light skin (BGR), with a small hue jitter
    skin = np.array([55, 75, 105]) * (1 - tone) + np.array([185, 205, 238]) * tone + u(-12, 12, 3)
    return dict(
        face_rx=u(33, 46), face_ry=u(44, 57), face_cy=u(57, 66), chin=u(0.0, 1.0), cheek=u(0.85, 1.1),
        eye_half=u(12.5, 22.0), eye_dy=u(-4.5, 4.5), eye_rx=u(4.0, 8.0), eye_ratio=u(0.35, 0.75),
        eye_tilt=u(-0.25, 0.25), iris=np.array([u(10, 140), u(20, 120), u(10, 90)]), iris_r=u(0.45, 0.8),
        brow_gap=u(5.5, 12.0), brow_thick=u(1.2, 4.2), brow_len=u(1.0, 1.7), brow_tilt=u(-0.35, 0.35),
        brow_arch=u(-1.0, 4.5), nose_y=u(65.0, 78.0), nose_w=u(3.5, 10.0), nose_style=int(rng.integers(3)),
        mouth_y=u(85.0, 99.0), mouth_half=u(8.5, 18.0), lip=u(1.2, 5.0), mouth_curve=u(-3.0, 3.0),
        lip_col=np.array([u(40, 120), u(40, 110), u(110, 200)]),
        skin=skin, hair=np.array([u(0, 120), u(0, 110), u(0, 140)]) * u(0.3, 1.0),
        hair_style=int(rng.integers(5)), hair_line=u(12.0, 30.0),
        glasses=int(rng.integers(3)) if u() < 0.35 else -1, glasses_col=np.array([u(0, 200) for _ in range(3)]),
        beard=int(rng.integers(1, 3)) if u() < 0.3 else 0,
        moles=[(u(-0.8, 0.8), u(-0.6, 0.8), u(0.9, 2.2)) for _ in range(int(rng.integers(0, 4)))],
    )


@functools.lru_cache(maxsize=256)
def _arc(n: int, a0: float, a1: float) -> Tuple[np.ndarray, np.ndarray]:
    t = np.linspace(a0, a1, n)
    return np.cos(t), np.sin(t)


def _ellipse(cx, cy, rx, ry, angle=0.0, n=28, a0=0.0, a1=2 * np.pi) -> np.ndarray:
    cos_t, sin_t = _arc(n, a0, a1)
    out = np.empty((n, 2))
    if angle == 0.0:
        out[:, 0] = cx + rx * cos_t
        out[:, 1] = cy + ry * sin_t
        return out
    c, s = np.cos(angle), np.sin(angle)
    out[:, 0] = cx + c * rx * cos_t - s * ry * sin_t
    out[:, 1] = cy + s * rx * cos_t + c * ry * sin_t
    return out


@functools.lru_cache(maxsize=64)
def _lin(a: float, b: float, n: int) -> np.ndarray:
    return np.linspace(a, b, n)


@functools.lru_cache(maxsize=16)
def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates centred and scaled to [-0.5, 0.5), float32 (H, W) each; cached per size."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx / w - 0.5, yy / h - 0.5


class _Canvas:
    """Records canonical-frame shapes, then draws them through one pose: p' = A @ [x + depth·yaw, y, 1].

    Mapping every point of every shape in one NumPy pass, and recording an identity's fixed shapes once,
    keeps the per-image cost low (≥500 images/s per core).
    """

    def __init__(self, img: np.ndarray, affine: np.ndarray, yaw: float):
        self.img, self.affine, self.yaw = img, affine, yaw
        self.scale = float(np.hypot(affine[0, 0], affine[1, 0]))
        self._shapes = []  # (pts (n, 2), colour, thickness or -1 for fill, closed, depth)

    def map(self, pts, depth=0.0) -> np.ndarray:
        """Map ``(n, 2)`` canonical points with per-point ``depth`` (scalar or ``(n,)``) to the canvas."""
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        xy1 = np.empty((len(pts), 3))
        xy1[:, 0] = pts[:, 0] + np.asarray(depth) * self.yaw
        xy1[:, 1] = pts[:, 1]
        xy1[:, 2] = 1.0
        return xy1 @ self.affine.T

    def fill(self, pts, colour, depth=0.0):
        self._shapes.append((pts, colour, -1, False, depth))

    def line(self, pts, colour, thickness, depth=0.0, closed=False):
        self._shapes.append((pts, colour, thickness, closed, depth))

    def compile(self):
        """Turn the recorded shapes into a block ``(points (n, 2), depths (n,), ops)`` and clear them."""
        arrays = [np.asarray(s[0], np.float64).reshape(-1, 2) for s in self._shapes] or [np.zeros((0, 2))]
        sizes = [len(a) for a in arrays]
        ops = [(n, tuple(float(c) for c in colour), thick, closed)
               for n, (_, colour, thick, closed, _) in zip(sizes, self._shapes)]
        block = (np.concatenate(arrays), np.repeat([s[4] for s in self._shapes], sizes), ops)
        self._shapes = []
        return block

    def draw(self, blocks):
        """Draw blocks in order (anti-aliased, 1/16 px fixed point), mapping all points in one pass."""
        pts = np.concatenate([b[0] for b in blocks])
        depth = np.concatenate([b[1] for b in blocks])
        fixed = np.round(self.map(pts, depth) * _SUB).astype(np.int32)
        start = 0
        for n, colour, thick, closed in (op for b in blocks for op in b[2]):
            seg, start = fixed[start:start + n], start + n
            if thick < 0:
                cv2.fillPoly(self.img, [seg], colour, cv2.LINE_AA, 4)
            else:
                cv2.polylines(self.img, [seg], closed, colour, max(1, int(round(thick * self.scale))),
                              cv2.LINE_AA, 4)


def _background(rng, h, w) -> np.ndarray:
    v = rng.random(22)
    c0, c1, ang = 255 * v[0:3], 255 * v[3:6], 2 * np.pi * v[6]
    # A linear gradient is the bilinear upsampling of its 2×2 corner colours (cheap in OpenCV).
    t = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]) @ [np.cos(ang), np.sin(ang)] * 0.5 + 0.5
    corners = np.clip(c0[None] + (c1 - c0)[None] * t[:, None], 0, 255).reshape(2, 2, 3).astype(np.float32)
    img = cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    for k in range(int(v[7] * 4)):  # clutter so the background is not a flat statistic
        c = v[8 + 3 * k: 11 + 3 * k]
        cv2.circle(img, (int(c[0] * w), int(c[1] * h)), int(4 + c[2] * w / 5),
                   (255 * v[17 + k], 255 * v[18 + k], 255 * v[19 + k]), -1, cv2.LINE_AA)
    return img


def _draw_under(cv: _Canvas, p: Dict) -> None:
    """Identity-fixed shapes under the eyes and mouth: hair, neck, face outline, nose."""
    skin, hair = p["skin"], p["hair"]
    cy, rx, ry = p["face_cy"], p["face_rx"], p["face_ry"]
    top = cy - ry
    if p["hair_style"] in (3, 4):  # long hair behind the face
        cv.fill(_ellipse(_CX, cy + 4, rx + 8, ry + 10, a0=np.pi, a1=2 * np.pi).tolist() +
                [[_CX + rx + 8, cy + ry * 0.9], [_CX - rx - 8, cy + ry * 0.9]], hair, -0.5)
    cv.fill([[_CX - 13, cy + ry - 8], [_CX + 13, cy + ry - 8], [_CX + 16, 125], [_CX - 16, 125]], skin * 0.8)
    # Face outline: ellipse top half, jaw blended between a round chin and a pointed one.
    t = _lin(0.0, np.pi, 15)
    jaw_x = _CX + rx * p["cheek"] * np.cos(t) * (1 - 0.35 * p["chin"] * np.sin(t) ** 4)
    jaw_y = cy + ry * np.sin(t) * (1 + 0.08 * p["chin"])
    outline = np.concatenate([_ellipse(_CX, cy, rx, ry, a0=np.pi, a1=2 * np.pi, n=15),
                              np.stack([jaw_x, jaw_y], 1)])
    cv.fill(outline, skin, -0.3)
    style = p["hair_style"]
    if style != 0:  # 0 = bald
        line = top + p["hair_line"] * (0.6 if style == 2 else 1.0)
        cap = _ellipse(_CX, cy, rx + 2, ry + 3, a0=np.pi, a1=2 * np.pi, n=17)
        cap = cap[cap[:, 1] <= line + 0.5] if style != 4 else cap
        if len(cap) >= 3:
            cv.fill(np.concatenate([cap, [[_CX + rx * 0.6, line], [_CX - rx * 0.6, line]]]), hair, -0.2)
        if style == 2:  # fringe
            cv.fill([[_CX - rx * 0.8, line - 2], [_CX + rx * 0.5, line - 2], [_CX + rx * 0.1, line + 9]], hair)
    ey = 51.6 + p["eye_dy"]
    ny, nw = p["nose_y"], p["nose_w"]
    if p["nose_style"] == 0:
        cv.fill([[_CX, ey + 4], [_CX + nw, ny + 2], [_CX - nw, ny + 2]], skin * 0.78, 0.9)
    elif p["nose_style"] == 1:
        cv.line([[_CX - 1, ey + 6], [_CX + 1.5, ny - 1], [_CX - nw * 0.6, ny + 2]], skin * 0.55, 1.3, 0.9)
    else:
        cv.fill(_ellipse(_CX, ny, nw * 0.8, nw * 0.55), skin * 0.72, 1.0)
    for s in (-1, 1):
        cv.fill(_ellipse(_CX + s * nw * 0.55, ny + 2.5, 1.6, 1.0, n=10), skin * 0.4, 0.8)


def _draw_over(cv: _Canvas, p: Dict) -> None:
    """Identity-fixed shapes over everything: moles, glasses."""
    cy, rx, ry, skin = p["face_cy"], p["face_rx"], p["face_ry"], p["skin"]
    for mxr, myr, mr in p["moles"]:
        cv.fill(_ellipse(_CX + mxr * rx * 0.7, cy + myr * ry * 0.6, mr, mr, n=10), skin * 0.35, 0.3)
    if p["glasses"] >= 0:
        ey, erx = 51.6 + p["eye_dy"], p["eye_rx"]
        eyes_x = (_CX - p["eye_half"], _CX + p["eye_half"])
        col, g = p["glasses_col"], p["glasses"]
        for ex in eyes_x:
            if g == 1:
                rect = [[ex - erx - 3, ey - 6], [ex + erx + 3, ey - 6], [ex + erx + 3, ey + 6], [ex - erx - 3, ey + 6]]
                cv.line(rect, col, 1.4, 0.7, closed=True)
            else:
                cv.line(_ellipse(ex, ey, erx + 3.5, erx + (2.5 if g == 0 else 0.5), n=20), col, 1.4, 0.7, True)
        cv.line([[eyes_x[0] + erx + 3, ey - 1], [eyes_x[1] - erx - 3, ey - 1]], col, 1.4, 0.8)


def _static_shapes(p: Dict):
    """Record the identity-fixed shapes once per identity (they are most of the drawing work)."""
    if "_static" not in p:
        rec = _Canvas(None, np.eye(2, 3), 0.0)
        _draw_under(rec, p)
        under = rec.compile()
        _draw_over(rec, p)
        p["_static"] = (under, rec.compile())
    return p["_static"]


def _draw_face(cv: _Canvas, p: Dict, expr: Dict) -> np.ndarray:
    """Draw the face; returns the 5 canonical-frame landmarks (before pose), ArcFace order."""
    under, over = _static_shapes(p)
    skin, hair = p["skin"], p["hair"]
    cy, rx, ry = p["face_cy"], p["face_rx"], p["face_ry"]
    ey = 51.6 + p["eye_dy"]
    eyes = np.array([[_CX - p["eye_half"], ey], [_CX + p["eye_half"], ey]])
    erx, ery = p["eye_rx"], p["eye_rx"] * p["eye_ratio"] * expr["blink"]
    for side, (ex, _) in zip((-1, 1), eyes):
        tilt = -side * p["eye_tilt"]
        cv.fill(_ellipse(ex, ey, erx, max(ery, 0.6), tilt), (235, 238, 240), 0.5)
        if ery > 1.2:
            ir = min(erx * p["iris_r"], ery * 1.1)
            cv.fill(_ellipse(ex + expr["gaze"], ey, ir, ir, n=16), p["iris"], 0.5)
            cv.fill(_ellipse(ex + expr["gaze"], ey, ir * 0.45, ir * 0.45, n=12), (15, 15, 15), 0.5)
        cv.line(_ellipse(ex, ey, erx, max(ery, 0.6), tilt, a0=np.pi, a1=2 * np.pi, n=12), skin * 0.45, 0.9, 0.5)
        by = ey - p["brow_gap"] - expr["brow_raise"]
        bl = erx * p["brow_len"]
        bx = _lin(-1.0, 1.0, 7) * bl
        brow = np.stack([ex + bx, by - p["brow_arch"] * (1 - (bx / bl) ** 2) - side * p["brow_tilt"] * bx], 1)
        cv.line(brow, hair * 0.8, p["brow_thick"], 0.6)
    nose_tip = np.array([_CX, p["nose_y"]])
    my, mh = p["mouth_y"], p["mouth_half"] * expr["mouth_stretch"]
    curve = p["mouth_curve"] + expr["smile"]
    mx_ = _lin(-1.0, 1.0, 11) * mh
    mid = my - curve * (1 - (mx_ / mh) ** 2) * -1.0
    lip, opening = p["lip"], expr["open"]
    upper = np.stack([_CX + mx_, mid - lip * (1 - (mx_ / mh) ** 2) - opening * 0.5 * (1 - (mx_ / mh) ** 2)], 1)
    lower = np.stack([_CX + mx_, mid + lip * 1.2 * (1 - (mx_ / mh) ** 2) + opening * (1 - (mx_ / mh) ** 2)], 1)
    cv.fill(np.concatenate([upper, lower[::-1]]), p["lip_col"], 0.6)
    if opening > 0.8:
        cv.fill(np.concatenate([upper[2:-2] + [0, lip], lower[2:-2][::-1] - [0, lip]]), (30, 20, 40), 0.6)
    mouth_l, mouth_r = upper[0].copy(), upper[-1].copy()
    if p["beard"]:
        chin_y = cy + ry * 1.05
        pts = [[_CX - mh - 4, my - lip - 4], [_CX + mh + 4, my - lip - 4], [_CX + mh + 3, my - lip - 1.5],
               [_CX - mh - 3, my - lip - 1.5]]
        if p["beard"] == 2:
            pts = [[_CX - rx * 0.85, my - 6], [_CX - mh - 3, my - lip - 3], [_CX + mh + 3, my - lip - 3],
                   [_CX + rx * 0.85, my - 6], [_CX + rx * 0.5, chin_y], [_CX - rx * 0.5, chin_y]]
        cv.fill(pts, hair, 0.4)
        if p["beard"] == 2:  # keep the lips visible through a full beard
            cv.fill(np.concatenate([upper, lower[::-1]]), p["lip_col"], 0.6)
    cv.draw([under, cv.compile(), over])
    return np.array([eyes[0], eyes[1], nose_tip, mouth_l, mouth_r])


def render(params: Dict, rng: np.random.Generator, size: Tuple[int, int], affine: np.ndarray,
           nuisance: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Render one image of an identity.

    Args:
        params: from :func:`identity_params`.
        rng: per-image generator (pose jitter is in ``affine``; this draws expression, lighting, noise).
        size: ``(H, W)`` of the output canvas.
        affine: ``(2, 3)`` canonical-frame → canvas map (the pose).
        nuisance: scales expression/lighting/blur/noise/occlusion strength (1 = default).

    Returns:
        ``(image (H, W, 3) uint8 BGR, landmarks (5, 2) float32 canvas pixels, ArcFace order)``.
    """
    h, w = size
    img = _background(rng, h, w)
    # One draw for all per-image scalars: Generator calls cost microseconds each.
    v = rng.random(24)
    yaw = (8 * v[0] - 4) * nuisance
    expr = dict(blink=1.0 if v[1] > 0.15 * nuisance else 0.2 + 0.5 * v[2],
                gaze=(2.4 * v[3] - 1.2) * nuisance, brow_raise=(3.5 * v[4] - 1.5) * nuisance,
                smile=(4 * v[5] - 1.5) * nuisance, open=3 * v[7] * nuisance if v[6] < 0.3 else 0.0,
                mouth_stretch=1.0 + (0.16 * v[8] - 0.06) * nuisance)
    canvas = _Canvas(img, affine, yaw)
    marks = _draw_face(canvas, params, expr)
    marks = canvas.map(marks, np.array([0.5, 0.5, 1.0, 0.6, 0.6])).astype(np.float32)
    if v[9] < 0.15 * nuisance:  # occluder: a hand/scarf/object patch
        ow, oh = int((0.15 + 0.25 * v[10]) * w), int((0.15 + 0.2 * v[11]) * h)
        x0, y0 = int(v[12] * (w - ow)), int(h // 3 + v[13] * (h - oh - h // 3))
        cv2.rectangle(img, (x0, y0), (x0 + ow, y0 + oh), tuple(float(c) for c in 255 * v[14:17]), -1)
    gx, gy = _grid(h, w)
    ang, strength = 2 * np.pi * v[17], 0.35 * v[18] * nuisance
    light = gx * np.float32(strength * np.cos(ang)) + gy * np.float32(strength * np.sin(ang)) + np.float32(1)
    gain = (1 + (0.45 * v[19] - 0.25) * nuisance) * (1 + (0.2 * v[20:23] - 0.1) * nuisance)
    out = img * (light[..., None] * gain.astype(np.float32))
    if v[23] < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), (0.3 + 1.6 * v[23]) * nuisance + 1e-3)
    noise_sd = 12.0 * abs(v[22] - 0.5) * nuisance
    if noise_sd > 0.5:
        # OpenCV's generator, seeded from this image's generator: deterministic and much cheaper than NumPy's.
        cv2.setRNGSeed(int(rng.integers(1 << 31)))
        noise = np.empty((h, w), np.float32)
        cv2.randn(noise, 0.0, noise_sd)
        out += noise[..., None]
    return np.clip(out, 0, 255, out=out).astype(np.uint8), marks


def pose_affine(rng: np.random.Generator, size: Tuple[int, int], raw: bool) -> np.ndarray:
    """A ``(2, 3)`` canonical → canvas similarity: small jitter around the template (aligned) or a random
    position, scale and rotation inside a larger canvas (``raw``)."""
    h, w = size
    if raw:
        base = min(h, w) / 112.0
        scale = base * rng.uniform(0.55, 0.85)
        angle = np.deg2rad(rng.uniform(-30, 30))
        cx = rng.uniform(0.4, 0.6) * w
        cy = rng.uniform(0.42, 0.58) * h
    else:
        scale = min(h, w) / 112.0 * rng.uniform(0.94, 1.06)
        angle = np.deg2rad(rng.uniform(-7, 7))
        cx = w / 2 + rng.uniform(-2.5, 2.5) * w / 112
        cy = h / 2 + rng.uniform(-2.5, 2.5) * h / 112
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    # Rotate and scale about the canonical centre (56, 56) and place it at (cx, cy).
    return np.array([[c, -s, cx - c * 56 + s * 56],
                     [s, c, cy - s * 56 - c * 56]], dtype=np.float64)
