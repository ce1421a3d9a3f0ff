"""Training augmentations for face crops and their counter-based randomness.

Every random number an augmentation uses is a pure function of ``(seed, epoch, sample index, slot)``
(:func:`sample_uniforms`, SplitMix64 hashing), so a batch's pixels do not depend on how many loader
processes made it, and resuming mid-epoch reproduces the same pixels.
"""
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

NUM_UNIFORMS = 10  # flip, rotate, crop scale, crop ratio, crop x, crop y, brightness, contrast, saturation, spare
_U64 = np.uint64


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply, and how strongly.

    flip: random horizontal flip (p = 0.5). rotate_deg: uniform in-plane rotation in ±rotate_deg.
    random_crop_scale / random_crop_ratio: area fraction and aspect ratio ranges of a random crop resized
    back to the input size ((1, 1) = off). brightness / contrast / saturation: factors uniform in
    [1 − x, 1 + x] (0 = off).
    """
    flip: bool = True
    rotate_deg: float = 0.0
    random_crop_scale: Tuple[float, float] = (1.0, 1.0)
    random_crop_ratio: Tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    @property
    def geometric(self) -> bool:
        return self.rotate_deg > 0 or tuple(self.random_crop_scale) != (1.0, 1.0) \
            or tuple(self.random_crop_ratio) != (1.0, 1.0)

    @property
    def colour(self) -> bool:
        return self.brightness > 0 or self.contrast > 0 or self.saturation > 0


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def sample_uniforms(seed: int, epoch: int, indices, n: int = NUM_UNIFORMS) -> np.ndarray:
    """Uniform numbers in [0, 1) for each sample: ``(B, n) float64``, a pure function of the arguments."""
    idx = np.asarray(indices, dtype=np.int64).astype(_U64)
    with np.errstate(over="ignore"):
        key = _splitmix64(_splitmix64(np.full(1, seed % (1 << 64), _U64)) ^ _U64(epoch % (1 << 64)))
        key = _splitmix64(key ^ idx)
        z = _splitmix64(key[:, None] + np.arange(1, n + 1, dtype=_U64)[None, :])
    return (z >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))


def hflip(img: np.ndarray) -> np.ndarray:
    """Mirror ``(H, W, C)`` left-right (a view)."""
    return img[:, ::-1]


def _warp(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the image centre by ``degrees`` (counter-clockwise), same size, black border."""
    h, w = img.shape[:2]
    return _warp(img, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0))


def resized_crop(img: np.ndarray, box: Tuple[float, float, float, float], degrees: float = 0.0) -> np.ndarray:
    """Crop ``box = (x0, y0, width, height)`` (float pixels), optionally rotated by ``degrees`` about its
    centre, and resize it to the input size in one bilinear warp."""
    h, w = img.shape[:2]
    x0, y0, bw, bh = box
    cx, cy = x0 + bw / 2, y0 + bh / 2
    a = np.deg2rad(degrees)
    sx, sy = w / bw, h / bh
    c, s = np.cos(a), np.sin(a)
    # dst = S · R(-a) · (src − centre) + output centre (same convention as cv2.getRotationMatrix2D).
    m = np.array([[sx * c, sx * s, 0.0], [-sy * s, sy * c, 0.0]])
    m[:, 2] = [w / 2, h / 2] - m[:, :2] @ [cx, cy]
    return _warp(img, m)


def _gray(img: np.ndarray, bgr: bool) -> np.ndarray:
    weights = np.array([0.114, 0.587, 0.299] if bgr else [0.299, 0.587, 0.114], np.float32)
    return img @ weights


def adjust_brightness(img: np.ndarray, factor: float) -> np.ndarray:
    """Scale intensities by ``factor`` (float32 in, float32 out)."""
    return img * np.float32(factor)


def adjust_contrast(img: np.ndarray, factor: float, bgr: bool = False) -> np.ndarray:
    """Blend with the mean grey level: ``mean + factor·(img − mean)`` (float32)."""
    mean = np.float32(_gray(img, bgr).mean())
    return (img - mean) * np.float32(factor) + mean


def adjust_saturation(img: np.ndarray, factor: float, bgr: bool = False) -> np.ndarray:
    """Blend with the per-pixel grey image: ``grey + factor·(img − grey)`` (float32)."""
    grey = _gray(img, bgr)[..., None]
    return (img - grey) * np.float32(factor) + grey


def augment(img: np.ndarray, cfg: AugmentConfig, u: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Apply ``cfg`` to one ``(H, W, 3) uint8`` image using its uniforms ``u`` (``(NUM_UNIFORMS,)``).

    Returns ``(H, W, 3)``, uint8 if no colour jitter is configured, else float32 (0..255, unclipped
    rounding is left to the caller's conversion). Channel order is preserved (``bgr`` only affects the
    grey weights of contrast/saturation).
    """
    if cfg.geometric:
        h, w = img.shape[:2]
        lo, hi = cfg.random_crop_scale
        scale = lo + (hi - lo) * u[2]
        rlo, rhi = np.log(cfg.random_crop_ratio[0]), np.log(cfg.random_crop_ratio[1])
        ratio = np.exp(rlo + (rhi - rlo) * u[3])
        bw = min(w, w * np.sqrt(scale * ratio))
        bh = min(h, h * np.sqrt(scale / ratio))
        box = ((w - bw) * u[4], (h - bh) * u[5], bw, bh)
        img = resized_crop(img, box, cfg.rotate_deg * (2 * u[1] - 1))
    if cfg.flip and u[0] < 0.5:
        img = hflip(img)
    if cfg.colour:
        out = img.astype(np.float32)
        if cfg.brightness > 0:
            out = adjust_brightness(out, 1 + cfg.brightness * (2 * u[6] - 1))
        if cfg.contrast > 0:
            out = adjust_contrast(out, 1 + cfg.contrast * (2 * u[7] - 1), bgr)
        if cfg.saturation > 0:
            out = adjust_saturation(out, 1 + cfg.saturation * (2 * u[8] - 1), bgr)
        return np.clip(out, 0, 255, out=out)
    return img
