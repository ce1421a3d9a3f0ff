"""One image on its way into a rec: read, validate, normalise to 8-bit BGR, preprocess, resize, encode.

Anything that cannot become a training image raises :class:`SkipImage` with a reason for the report.
"""
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import cv2
import numpy as np

MIN_SIDE = 16  # smaller images carry no usable face


class SkipImage(Exception):
    """Raised (by the packer or a ``preprocess`` callable) to leave one image out, with a reason."""


@dataclass(frozen=True)
class EncodeOptions:
    """size: ``(H, W)`` output size or ``None`` to keep the input size. quality: JPEG quality.
    reencode: re-encode JPEGs that are already the right size (otherwise their bytes are kept)."""
    size: Optional[Tuple[int, int]] = (112, 112)
    quality: int = 95
    reencode: bool = False


def _looks_truncated(data: bytes) -> Optional[str]:
    if data[:3] == b"\xff\xd8\xff" and b"\xff\xd9" not in data[-1024:]:
        return "truncated JPEG (no end-of-image marker); fix: copy or download the file again"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        return "truncated PNG (no IEND chunk); fix: copy or download the file again"
    return None


def to_bgr8(arr: np.ndarray) -> np.ndarray:
    """Grey, grey+alpha, BGRA and 16-bit images → ``(H, W, 3) uint8`` BGR (alpha dropped, like cv2.imread)."""
    if arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float64) * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    channels = arr.shape[2]
    if channels == 1:
        return cv2.cvtColor(arr[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 2:
        return cv2.cvtColor(arr[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR)
    return arr


def prepare_image(path: str, shown: str, opts: EncodeOptions,
                  preprocess: Optional[Callable[[np.ndarray, str], np.ndarray]] = None) -> Tuple[bytes, Tuple[int, int]]:
    """Return ``(encoded JPEG bytes, (H, W))`` for one file, or raise :class:`SkipImage`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SkipImage(f"cannot read the file ({exc.strerror}); fix: check permissions") from None
    if not data:
        raise SkipImage("empty file (0 bytes); fix: delete it or copy it again")
    problem = _looks_truncated(data)
    if problem:
        raise SkipImage(problem)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise SkipImage("not a decodable image (corrupt, not an image, or over OpenCV's pixel limit); "
                        "fix: delete or replace it")
    is_plain_jpeg = data[:3] == b"\xff\xd8\xff" and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    img = to_bgr8(arr)
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise SkipImage(f"too small ({w}x{h} px, minimum {MIN_SIDE}); fix: delete it or use a larger image")
    changed = False
    if preprocess is not None:
        rgb = preprocess(np.ascontiguousarray(img[:, :, ::-1]), shown)
        img = np.ascontiguousarray(np.asarray(rgb, np.uint8)[:, :, ::-1])
        changed = True
    if opts.size is not None and img.shape[:2] != tuple(opts.size):
        th, tw = opts.size
        shrink = img.shape[0] > th or img.shape[1] > tw
        img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        changed = True
    if is_plain_jpeg and not changed and not opts.reencode:
        return data, img.shape[:2]
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(opts.quality)])
    if not ok:
        raise SkipImage("JPEG encoding failed")
    return buf.tobytes(), img.shape[:2]
