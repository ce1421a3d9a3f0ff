"""Synthetic landmark images for alignment tests: Gaussian blobs at known points and their measured centres."""
import numpy as np


def render_blobs(points, shape, sigma=1.6):
    """Gaussian blobs (one colour channel per point group) centred on ``points`` (pixel-index coords)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for k, (x, y) in enumerate(points):
        img[:, :, k % 3] += 250 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.clip(img, 0, 255).astype(np.uint8)


def blob_centres(img, near, radius=5):
    """Intensity-weighted centroid of each blob, searched in a window around its expected position."""
    out = []
    for k, (x, y) in enumerate(near):
        x0, y0 = int(round(x)) - radius, int(round(y)) - radius
        win = img[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1, k % 3].astype(np.float64)
        yy, xx = np.mgrid[0:win.shape[0], 0:win.shape[1]]
        out.append([(win * xx).sum() / win.sum() + x0, (win * yy).sum() / win.sum() + y0])
    return np.array(out)
