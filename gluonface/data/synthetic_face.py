"""Procedural face identities: fixed geometry and colouring, compiled once into a linear point model.

Everything is drawn in a canonical 112×112 frame whose eyes, nose and mouth sit near the ArcFace template.
Identity lives in geometry (face shape, eye spacing/size/shape, brows, nose, mouth, hair style, glasses,
beard, moles): strong and consistent. Per-image colour (background, lighting, colour cast) varies more than
skin colour between identities, so the mean colour of an image says little about who it is.

An identity compiles once into a :class:`FaceModel`: every point of every shape, and the 5 landmarks, as a
linear function of the per-image scalars in ``TERMS`` (eye opening, gaze, iris size, brow raise, mouth
stretch, smile, mouth opening, and yaw, which shifts a point by its depth), plus the short list of OpenCV
calls that draw them. An image then costs one small matrix product for all its points and about fifteen
drawing calls (:mod:`gluonface.data.synthetic_render`).
"""
import functools
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

# ArcFace 112×112 template (eye centres, nose tip, mouth corners), image-left first.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
_CX = 56.0
# The per-image scalars a point is linear in ("one" carries the point's neutral position).
TERMS = ("one", "eye_ry", "gaze", "iris_r", "brow_raise", "stretch", "smile", "open", "yaw")
_YAW = TERMS.index("yaw")


def identity_params(rng: np.random.Generator) -> Dict:
    """Draw one identity's fixed appearance (canonical-frame pixels, colours as BGR floats 0..255).

    All numbers come from one ``rng.random`` call (Generator calls cost microseconds each).
    """
    take = iter(rng.random(64)).__next__

    def u(lo=0.0, hi=1.0, n=None):
        if n is None:
            return lo + (hi - lo) * take()
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        return lo + (hi - lo) * np.array([take() for _ in range(n)])

    tone = u()  # dark to light skin (BGR), with a small hue jitter
    skin = np.array([55, 75, 105]) * (1 - tone) + np.array([185, 205, 238]) * tone + u(-12, 12, 3)
    p = dict(
        face_rx=u(33, 46), face_ry=u(44, 57), face_cy=u(57, 66), chin=u(0.0, 1.0), cheek=u(0.85, 1.1),
        eye_half=u(12.5, 22.0), eye_dy=u(-4.5, 4.5), eye_rx=u(4.0, 8.0), eye_ratio=u(0.35, 0.75),
        eye_tilt=u(-0.25, 0.25), iris=u([10, 20, 10], [140, 120, 90], 3), iris_r=u(0.45, 0.8),
        brow_gap=u(5.5, 12.0), brow_thick=u(1.2, 4.2), brow_len=u(1.0, 1.7), brow_tilt=u(-0.35, 0.35),
        brow_arch=u(-1.0, 4.5), nose_y=u(65.0, 78.0), nose_w=u(3.5, 10.0), nose_style=int(u(0, 3)),
        mouth_y=u(85.0, 99.0), mouth_half=u(8.5, 18.0), lip=u(1.2, 5.0), mouth_curve=u(-3.0, 3.0),
        lip_col=u([40, 40, 110], [120, 110, 200], 3),
        skin=skin, hair=u(0, [120, 110, 140], 3) * u(0.3, 1.0),
        hair_style=int(u(0, 5)), hair_line=u(12.0, 30.0), glasses_col=u(0, 200, 3))
    p["glasses"] = int(u(0, 3)) if u() < 0.35 else -1
    p["beard"] = int(u(1, 3)) if u() < 0.3 else 0
    p["moles"] = [(u(-0.8, 0.8), u(-0.6, 0.8), u(0.9, 2.2)) for _ in range(int(u(0, 4)))]
    return p


@dataclass(frozen=True)
class DrawOp:
    """One OpenCV call over point ranges ``(start, stop)``; thickness 0 fills (anti-aliased)."""
    polys: Tuple[Tuple[int, int], ...]
    thickness: float = 0.0
    closed: bool = False
    when: Optional[str] = None  # "eye_open" / "mouth_open": drawn only in images where that holds


@dataclass(frozen=True)
class FaceModel:
    """An identity, compiled: ``points (n, 2) = (scalars (len(TERMS),) @ basis).reshape(n, 2)``."""
    basis: np.ndarray                             # (len(TERMS), 2n) float64, canonical-frame pixels
    ops: Tuple[DrawOp, ...]                       # in drawing order
    colours: Tuple[Tuple[float, float, float], ...]  # BGR of each op
    eye: Tuple[float, float, float]               # open-eye half-height, half-width, iris radius / half-width
    landmarks: slice                              # the 5 landmark points, ArcFace order


class _Recorder:
    """Collects points (neutral position plus a coefficient per term) and the calls that draw them."""

    def __init__(self):
        self._blocks, self._n, self.ops, self.colours = [], 0, [], []

    def points(self, base, depth=0.0, **terms) -> Tuple[int, int]:
        base = np.asarray(base, np.float64).reshape(-1, 2)
        block = np.zeros((len(TERMS), len(base), 2))
        block[0] = base
        for name, coef in terms.items():
            block[TERMS.index(name)] = coef
        block[_YAW, :, 0] = depth
        self._blocks.append(block)
        self._n += len(base)
        return self._n - len(base), self._n

    def draw(self, polys, colour, thickness=0.0, closed=False, when=None):
        self.ops.append(DrawOp(tuple(polys), float(thickness), closed, when))
        self.colours.append(tuple(float(c) for c in colour))

    def fill(self, base, colour, depth=0.0, **terms):
        self.draw([self.points(base, depth, **terms)], colour)

    def line(self, base, colour, thickness, depth=0.0, closed=False):
        self.draw([self.points(base, depth)], colour, thickness, closed)

    def model(self, eye, landmarks: Tuple[int, int]) -> FaceModel:
        basis = np.concatenate(self._blocks, axis=1).reshape(len(TERMS), -1)
        basis.setflags(write=False)
        return FaceModel(basis, tuple(self.ops), tuple(self.colours), eye, slice(*landmarks))


@functools.lru_cache(maxsize=64)
def _arc(n: int, a0: float, a1: float) -> np.ndarray:
    """``(n, 2)`` unit-circle points ``(cos t, sin t)`` for t from a0 to a1."""
    t = np.linspace(a0, a1, n)
    arc = np.stack([np.cos(t), np.sin(t)], 1)
    arc.setflags(write=False)  # shared by every caller through the cache
    return arc


def _ellipse(cx, cy, rx, ry, n=28, a0=0.0, a1=2 * np.pi) -> np.ndarray:
    return np.array([cx, cy]) + _arc(n, a0, a1) * [rx, ry]


def _head(rec: _Recorder, p: Dict) -> None:
    """Long hair, neck, face outline, hair cap and fringe."""
    skin, hair = p["skin"], p["hair"]
    cy, rx, ry = p["face_cy"], p["face_rx"], p["face_ry"]
    if p["hair_style"] in (3, 4):  # long hair behind the face
        back = _ellipse(_CX, cy + 4, rx + 8, ry + 10, a0=np.pi, a1=2 * np.pi)
        rec.fill(np.concatenate([back, [[_CX + rx + 8, cy + ry * 0.9], [_CX - rx - 8, cy + ry * 0.9]]]), hair, -0.5)
    rec.fill([[_CX - 13, cy + ry - 8], [_CX + 13, cy + ry - 8], [_CX + 16, 125], [_CX - 16, 125]], skin * 0.8)
    # Face outline: ellipse top half, jaw blended between a round chin and a pointed one.
    t = np.linspace(0.0, np.pi, 15)
    jaw = np.stack([_CX + rx * p["cheek"] * np.cos(t) * (1 - 0.35 * p["chin"] * np.sin(t) ** 4),
                    cy + ry * np.sin(t) * (1 + 0.08 * p["chin"])], 1)
    rec.fill(np.concatenate([_ellipse(_CX, cy, rx, ry, n=15, a0=np.pi, a1=2 * np.pi), jaw]), skin, -0.3)
    style = p["hair_style"]
    if style != 0:  # 0 = bald
        line = cy - ry + p["hair_line"] * (0.6 if style == 2 else 1.0)
        cap = _ellipse(_CX, cy, rx + 2, ry + 3, n=17, a0=np.pi, a1=2 * np.pi)
        cap = cap[cap[:, 1] <= line + 0.5] if style != 4 else cap
        if len(cap) >= 3:
            rec.fill(np.concatenate([cap, [[_CX + rx * 0.6, line], [_CX - rx * 0.6, line]]]), hair, -0.2)
        if style == 2:  # fringe
            rec.fill([[_CX - rx * 0.8, line - 2], [_CX + rx * 0.5, line - 2], [_CX + rx * 0.1, line + 9]], hair)


def _nose(rec: _Recorder, p: Dict) -> None:
    skin, ny, nw = p["skin"], p["nose_y"], p["nose_w"]
    ey = 51.6 + p["eye_dy"]
    if p["nose_style"] == 0:
        rec.fill([[_CX, ey + 4], [_CX + nw, ny + 2], [_CX - nw, ny + 2]], skin * 0.78, 0.9)
    elif p["nose_style"] == 1:
        rec.line([[_CX - 1, ey + 6], [_CX + 1.5, ny - 1], [_CX - nw * 0.6, ny + 2]], skin * 0.55, 1.3, 0.9)
    else:
        rec.fill(_ellipse(_CX, ny, nw * 0.8, nw * 0.55), skin * 0.72, 1.0)
    nostrils = [rec.points(_ellipse(_CX + s * nw * 0.55, ny + 2.5, 1.6, 1.0, n=10), 0.8) for s in (-1, 1)]
    rec.draw(nostrils, p["skin"] * 0.4)


def _eyes(rec: _Recorder, p: Dict) -> np.ndarray:
    """Eye whites, irises, pupils, lids and brows (each kind for both eyes in one call); returns centres."""
    ey, erx, bl = 51.6 + p["eye_dy"], p["eye_rx"], p["eye_rx"] * p["brow_len"]
    centres = np.array([[_CX - p["eye_half"], ey], [_CX + p["eye_half"], ey]])
    parts = {k: [] for k in ("white", "iris", "pupil", "lid", "brow")}
    for side, c in zip((-1, 1), centres):
        rot = np.array([[np.cos(-side * p["eye_tilt"]), np.sin(-side * p["eye_tilt"])]])  # (cos, sin) of tilt
        for kind, arc in (("white", _arc(28, 0.0, 2 * np.pi)), ("lid", _arc(12, np.pi, 2 * np.pi))):
            # (x, y) = c + R(tilt) @ (erx cos t, eye_ry sin t): linear in the per-image half-height eye_ry
            ry_coef = arc[:, 1:] * [[-rot[0, 1], rot[0, 0]]]
            parts[kind].append(rec.points(c + erx * arc[:, :1] * rot, 0.5, eye_ry=ry_coef))
        for kind, n, r in (("iris", 16, 1.0), ("pupil", 12, 0.45)):
            parts[kind].append(rec.points(np.repeat(c[None], n, 0), 0.5, gaze=[1.0, 0.0],
                                          iris_r=r * _arc(n, 0.0, 2 * np.pi)))
        bx = np.linspace(-1.0, 1.0, 7) * bl
        brow = np.stack([c[0] + bx, ey - p["brow_gap"] - p["brow_arch"] * (1 - (bx / bl) ** 2)
                         - side * p["brow_tilt"] * bx], 1)
        parts["brow"].append(rec.points(brow, 0.6, brow_raise=[0.0, -1.0]))
    rec.draw(parts["white"], (235, 238, 240))
    rec.draw(parts["iris"], p["iris"], when="eye_open")
    rec.draw(parts["pupil"], (15, 15, 15), when="eye_open")
    rec.draw(parts["lid"], p["skin"] * 0.45, 0.9)
    rec.draw(parts["brow"], p["hair"] * 0.8, p["brow_thick"])
    return centres


def _mouth(rec: _Recorder, p: Dict) -> None:
    """Lips (upper curve then lower curve reversed), open mouth, moustache or beard."""
    my, mh, lip, curve = p["mouth_y"], p["mouth_half"], p["lip"], p["mouth_curve"]
    u = np.linspace(-1.0, 1.0, 11)
    q = np.concatenate([1 - u ** 2, (1 - u ** 2)[::-1]])[:, None]
    x = np.concatenate([u, u[::-1]])[:, None]
    upper = np.arange(22) < 11
    base = np.hstack([np.full_like(x, _CX), my + q * np.where(upper, curve - lip, curve + 1.2 * lip)[:, None]])
    coefs = dict(stretch=x * [mh, 0.0], smile=q * [0.0, 1.0], open=q * np.where(upper, -0.5, 1.0)[:, None] * [0, 1])
    lips = rec.points(base, 0.6, **coefs)
    rec.draw([lips], p["lip_col"])
    inner = np.r_[2:9, 13:20]
    shift = np.where(inner < 11, lip, -lip)[:, None] * [0.0, 1.0]
    rec.draw([rec.points(base[inner] + shift, 0.6, **{k: c[inner] for k, c in coefs.items()})], (30, 20, 40),
             when="mouth_open")
    if p["beard"] == 1:  # moustache: its width follows the mouth's stretch
        pts = [[_CX - 4, my - lip - 4], [_CX + 4, my - lip - 4], [_CX + 3, my - lip - 1.5], [_CX - 3, my - lip - 1.5]]
        rec.fill(pts, p["hair"], 0.4, stretch=[[-mh, 0], [mh, 0], [mh, 0], [-mh, 0]])
    elif p["beard"] == 2:
        rx, chin_y = p["face_rx"], p["face_cy"] + p["face_ry"] * 1.05
        pts = [[_CX - rx * 0.85, my - 6], [_CX - 3, my - lip - 3], [_CX + 3, my - lip - 3],
               [_CX + rx * 0.85, my - 6], [_CX + rx * 0.5, chin_y], [_CX - rx * 0.5, chin_y]]
        rec.fill(pts, p["hair"], 0.4, stretch=[[0, 0], [-mh, 0], [mh, 0], [0, 0], [0, 0], [0, 0]])
        rec.draw([lips], p["lip_col"])  # keep the lips visible through a full beard


def _over(rec: _Recorder, p: Dict) -> None:
    """Moles and glasses, over everything."""
    cy, rx, ry = p["face_cy"], p["face_rx"], p["face_ry"]
    moles = [rec.points(_ellipse(_CX + mx * rx * 0.7, cy + my * ry * 0.6, r, r, n=10), 0.3)
             for mx, my, r in p["moles"]]
    if moles:
        rec.draw(moles, p["skin"] * 0.35)
    g = p["glasses"]
    if g >= 0:
        ey, erx, half = 51.6 + p["eye_dy"], p["eye_rx"], p["eye_half"]
        rims = []
        for ex in (_CX - half, _CX + half):
            if g == 1:
                rim = [[ex - erx - 3, ey - 6], [ex + erx + 3, ey - 6], [ex + erx + 3, ey + 6], [ex - erx - 3, ey + 6]]
            else:
                rim = _ellipse(ex, ey, erx + 3.5, erx + (2.5 if g == 0 else 0.5), n=20)
            rims.append(rec.points(rim, 0.7))
        rec.draw(rims, p["glasses_col"], 1.4, closed=True)
        rec.line([[_CX - half + erx + 3, ey - 1], [_CX + half - erx - 3, ey - 1]], p["glasses_col"], 1.4, 0.8)


def compile_face(p: Dict) -> FaceModel:
    """Compile :func:`identity_params` into the :class:`FaceModel` every image of the identity is drawn from."""
    rec = _Recorder()
    _head(rec, p)
    _nose(rec, p)
    eyes = _eyes(rec, p)
    _mouth(rec, p)
    _over(rec, p)
    mh, my = p["mouth_half"], p["mouth_y"]
    marks = rec.points([eyes[0], eyes[1], [_CX, p["nose_y"]], [_CX, my], [_CX, my]], [0.5, 0.5, 1.0, 0.6, 0.6],
                       stretch=[[0, 0], [0, 0], [0, 0], [-mh, 0], [mh, 0]])
    eye_ry = p["eye_rx"] * p["eye_ratio"]
    return rec.model((eye_ry, p["eye_rx"], p["iris_r"]), marks)
