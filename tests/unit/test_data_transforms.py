"""Augmentations against NumPy references, and the counter-based randomness."""
import numpy as np
import pytest

from gluonface.data import transforms as T


def _bilinear(img, xs, ys):
    """NumPy reference: sample img (H, W, C) at float coords, zero outside (cv2 BORDER_CONSTANT)."""
    h, w = img.shape[:2]
    pad = np.zeros((h + 2, w + 2, img.shape[2]), np.float64)
    pad[1:-1, 1:-1] = img
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]

    def at(yy, xx):
        inside = (xx >= -1) & (xx <= w) & (yy >= -1) & (yy <= h)
        return pad[np.clip(yy + 1, 0, h + 1).astype(int), np.clip(xx + 1, 0, w + 1).astype(int)] * inside[..., None]
    return (at(y0, x0) * (1 - fx) * (1 - fy) + at(y0, x0 + 1) * fx * (1 - fy)
            + at(y0 + 1, x0) * (1 - fx) * fy + at(y0 + 1, x0 + 1) * fx * fy)


@pytest.fixture
def img():
    return np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)


def test_uniforms_are_pure_functions_of_seed_epoch_index():
    a = T.sample_uniforms(3, 1, [5, 9, 11])
    b = T.sample_uniforms(3, 1, [11, 5])
    assert a.shape == (3, T.NUM_UNIFORMS) and a.dtype == np.float64
    np.testing.assert_array_equal(a[2], b[0])   # independent of batch composition and position
    np.testing.assert_array_equal(a[0], b[1])
    assert not np.array_equal(a, T.sample_uniforms(3, 2, [5, 9, 11]))
    assert not np.array_equal(a, T.sample_uniforms(4, 1, [5, 9, 11]))
    many = T.sample_uniforms(0, 0, np.arange(20000))
    assert many.min() >= 0 and many.max() < 1
    assert abs(many.mean() - 0.5) < 0.01 and abs((many[:, 0] < 0.5).mean() - 0.5) < 0.02


def test_flip_and_rotation_match_numpy(img):
    np.testing.assert_array_equal(T.hflip(img), img[:, ::-1])
    square = img[:32, :32]
    np.testing.assert_array_equal(T.rotate(square, 90), np.rot90(square, 1))


def test_rotated_resized_crop_matches_bilinear_reference(img):
    box, deg = (6.0, 4.0, 20.0, 16.0), 12.0
    out = T.resized_crop(img, box, deg)
    h, w = img.shape[:2]
    x0, y0, bw, bh = box
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    # Output pixel → source: undo scale, rotate by +deg about the box centre.
    u, v = (xs - w / 2) * bw / w, (ys - h / 2) * bh / h
    a = np.deg2rad(deg)
    sx = np.cos(a) * u - np.sin(a) * v + x0 + bw / 2
    sy = np.sin(a) * u + np.cos(a) * v + y0 + bh / 2
    ref = _bilinear(img.astype(np.float64), sx, sy)
    err = np.abs(out.astype(float) - ref)
    # OpenCV quantises bilinear weights to 1/32 px, worth up to 255/32 on this noise image.
    assert err.mean() < 1.0 and err.max() <= 9.0
    wrong = _bilinear(img.astype(np.float64), np.cos(a) * u + np.sin(a) * v + x0 + bw / 2,
                      -np.sin(a) * u + np.cos(a) * v + y0 + bh / 2)
    assert np.abs(out.astype(float) - wrong).mean() > 20  # the opposite rotation is clearly rejected
    np.testing.assert_array_equal(T.resized_crop(img, (0, 0, w, h)), img)


def test_colour_jitter_formulas(img):
    f = img.astype(np.float32)
    np.testing.assert_allclose(T.adjust_brightness(f, 1.2), f * 1.2, rtol=1e-6)
    grey = f @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(T.adjust_contrast(f, 0.5), (f - grey.mean()) * 0.5 + grey.mean(), atol=1e-3)
    np.testing.assert_allclose(T.adjust_saturation(f, 0.0), np.repeat(grey[..., None], 3, 2), atol=1e-3)
    bgr = f[:, :, ::-1]
    np.testing.assert_allclose(T.adjust_saturation(bgr, 0.3, bgr=True)[:, :, ::-1],
                               T.adjust_saturation(f, 0.3), atol=1e-3)


def test_augment_uses_its_uniforms(img):
    cfg = T.AugmentConfig()
    u = np.full(T.NUM_UNIFORMS, 0.9)
    np.testing.assert_array_equal(T.augment(img, cfg, u), img)
    u[0] = 0.1
    np.testing.assert_array_equal(T.augment(img, cfg, u), img[:, ::-1])
    strong = T.AugmentConfig(flip=False, brightness=0.5)
    u[6] = 1.0  # factor 1.5
    np.testing.assert_allclose(T.augment(img, strong, u), np.clip(img * 1.5, 0, 255), atol=1e-3)
    rot = T.AugmentConfig(flip=False, rotate_deg=30, random_crop_scale=(0.5, 1.0))
    out = T.augment(img, rot, np.linspace(0.05, 0.95, T.NUM_UNIFORMS))
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
