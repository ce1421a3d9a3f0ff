"""Similarity fit, ArcFace template and warp, checked against closed forms and rendered point blobs."""
import cv2
import numpy as np
import pytest

from gluonface.align.transform import (ARCFACE_112, align_face, arcface_template, parse_size,
                                       transform_points, umeyama_similarity)
from gluonface.errors import GluonFaceError
from blob_landmarks import blob_centres, render_blobs


def closed_form_similarity(src, dst):
    """Independent reference: 2-D least-squares similarity via complex numbers, dst ≈ a·src + b."""
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    cs, cd = zs - zs.mean(), zd - zd.mean()
    a = (cd * np.conj(cs)).sum() / (np.abs(cs) ** 2).sum()
    b = zd.mean() - a * zs.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def random_similarity(rng):
    s, th = rng.uniform(0.3, 3.0), rng.uniform(-np.pi, np.pi)
    return np.array([[s * np.cos(th), -s * np.sin(th), rng.uniform(-50, 50)],
                     [s * np.sin(th), s * np.cos(th), rng.uniform(-50, 50)]])


def test_template_sizes():
    np.testing.assert_allclose(arcface_template(112), ARCFACE_112)
    t96 = arcface_template("112x96")
    np.testing.assert_allclose(t96[:, 0], ARCFACE_112[:, 0] - 8.0)  # the classic 112x96 template
    np.testing.assert_allclose(t96[:, 1], ARCFACE_112[:, 1])
    np.testing.assert_allclose(arcface_template(224), ARCFACE_112 * 2)
    np.testing.assert_allclose(arcface_template((56, 56)), ARCFACE_112 / 2)
    # insightface's estimate_norm for sides that are multiples of 128 but not of 112: 112 scale x S/128, +8 x.
    np.testing.assert_allclose(arcface_template(128), ARCFACE_112 + [8.0, 0.0])
    np.testing.assert_allclose(arcface_template(256), ARCFACE_112 * 2 + [16.0, 0.0])
    np.testing.assert_allclose(arcface_template(896), ARCFACE_112 * 8)  # both: the multiple of 112 rule
    np.testing.assert_allclose(arcface_template("128x112"), ARCFACE_112 * 128 / 112 - [8.0, 0.0])


def test_parse_size():
    assert parse_size(112) == (112, 112)
    assert parse_size("112x96") == (112, 96)
    assert parse_size((128, 128)) == (128, 128)
    for bad in ("abc", "0", "112x96x3", 4):
        with pytest.raises(GluonFaceError):
            parse_size(bad)


def test_umeyama_matches_closed_form_on_noisy_points():
    rng = np.random.default_rng(0)
    for _ in range(20):
        src = rng.uniform(0, 200, (5, 2))
        dst = transform_points(random_similarity(rng), src) + rng.normal(0, 3.0, (5, 2))
        np.testing.assert_allclose(umeyama_similarity(src, dst), closed_form_similarity(src, dst),
                                   rtol=1e-9, atol=1e-8)


def test_umeyama_recovers_exact_similarity():
    rng = np.random.default_rng(1)
    m = random_similarity(rng)
    src = rng.uniform(0, 100, (5, 2))
    np.testing.assert_allclose(umeyama_similarity(src, transform_points(m, src)), m, atol=1e-9)


def test_no_reflection_even_for_mirrored_points():
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, (5, 2))
    dst = src * np.array([-1.0, 1.0])  # a pure mirror: the best similarity must still be a rotation
    m = umeyama_similarity(src, dst)
    assert np.linalg.det(m[:, :2]) > 0
    np.testing.assert_allclose(m, closed_form_similarity(src, dst), atol=1e-8)


def test_degenerate_points_rejected():
    with pytest.raises(ValueError):
        umeyama_similarity(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        align_face(np.zeros((50, 50, 3), np.uint8), np.full((5, 2), 10.0))



@pytest.mark.parametrize("size", [112, "112x96", 160])
def test_warp_puts_true_points_on_template(size):
    """Raw face: a pose (similarity) applied to template points. Warping from the true points must put
    the blobs back on the template (within 0.5 px) and the fitted transform has no residual."""
    rng = np.random.default_rng(3)
    for _ in range(3):
        angle, scale = rng.uniform(-35, 35), rng.uniform(1.5, 3.0)
        pose = cv2.getRotationMatrix2D((56, 56), angle, scale)
        pose[:, 2] += rng.uniform(60, 140, 2)
        true_pts = transform_points(pose, ARCFACE_112)
        raw = render_blobs(true_pts, (400, 420), sigma=1.6 * scale)
        crop, m = align_face(raw, true_pts, size)
        template = arcface_template(size)
        assert crop.shape[:2] == parse_size(size)
        np.testing.assert_allclose(transform_points(m, true_pts), template, atol=1e-6)
        err = np.linalg.norm(blob_centres(crop, template) - template, axis=1)
        assert err.max() < 0.5, err


def test_border_is_zero():
    img = np.full((60, 60, 3), 200, np.uint8)
    pts = ARCFACE_112 / 112 * 40 - 10  # a face cut by the image corner: the crop reaches outside it
    crop, _ = align_face(img, pts, 112)
    assert crop[0, 0].tolist() == [0, 0, 0] and crop[56, 56].tolist() == [200, 200, 200]
