"""Reading images of any common kind into ``(H, W, 3) uint8`` RGB, the one layout the aligner works on."""
import cv2
import numpy as np


class UnreadableImage(Exception):
    """The bytes are not an image OpenCV can decode (the message says why)."""


def to_rgb(image):
    """Convert a grayscale ``(H, W)`` / ``(H, W, 1)``, RGB ``(H, W, 3)`` or RGBA ``(H, W, 4)`` array to
    ``(H, W, 3) uint8`` RGB. 16-bit images are scaled to 8 bits; float images are taken as 0..255."""
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image (H, W), (H, W, 1|3|4); got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]  # alpha is dropped: the colour channels are what the face looks like
    return np.ascontiguousarray(image)


def decode_rgb(data):
    """Decode encoded image bytes (JPEG, PNG, ...) to ``(H, W, 3) uint8`` RGB; raises UnreadableImage."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if not buf.size:
        raise UnreadableImage("empty file")
    # IMREAD_COLOR (not UNCHANGED): honours the EXIF orientation of phone photos, as cv2.imread does,
    # so points from other tools refer to the same pixels; ANYDEPTH keeps 16-bit data for to_rgb.
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if image is None or image.size == 0:
        raise UnreadableImage("not a decodable image (OpenCV could not read it)")
    return to_rgb(image[:, :, ::-1])  # BGR -> RGB


def read_rgb(path):
    """Read an image file to ``(H, W, 3) uint8`` RGB; raises UnreadableImage (with the reason)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UnreadableImage(f"cannot open: {exc.strerror or exc}") from None
    return decode_rgb(data)


def write_rgb(path, image, quality=95):
    """Write ``(H, W, 3) uint8`` RGB to ``path`` (format from the extension; JPEG at ``quality``)."""
    ext = "." + str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image[:, :, ::-1]), params)
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    with open(path, "wb") as f:
        f.write(buf.tobytes())
