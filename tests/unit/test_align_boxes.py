"""Box arithmetic of the MTCNN cascade against brute-force references."""
import numpy as np

from gluonface.align.boxes import apply_regression, crop_patches, nms, to_square
from gluonface.align.mtcnn import pyramid_scales


def brute_nms(boxes, scores, thr, mode):
    def overlap(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        aa, ab = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
        return iw * ih / (min(aa, ab) if mode == "min" else aa + ab - iw * ih)
    alive, keep = list(np.argsort(-scores, kind="stable")), []
    while alive:
        best = alive.pop(0)
        keep.append(best)
        alive = [i for i in alive if overlap(boxes[best], boxes[i]) <= thr]
    return keep


def test_nms_matches_brute_force():
    rng = np.random.default_rng(0)
    for mode in ("union", "min"):
        for thr in (0.3, 0.5, 0.7):
            xy = rng.uniform(0, 100, (60, 2))
            wh = rng.uniform(5, 40, (60, 2))
            boxes = np.hstack([xy, xy + wh])
            scores = rng.uniform(size=60)
            assert nms(boxes, scores, thr, mode).tolist() == brute_nms(boxes, scores, thr, mode)


def test_regression_and_square():
    boxes = np.array([[10.0, 20.0, 30.0, 60.0]])
    out = apply_regression(boxes, np.array([[0.1, -0.1, 0.5, 0.25]]))
    np.testing.assert_allclose(out, [[12.0, 16.0, 40.0, 70.0]])
    sq = to_square(boxes)
    np.testing.assert_allclose(sq, [[0.0, 20.0, 40.0, 60.0]])  # side 40, same centre (20, 40)


def test_crop_patches_pads_with_zero_outside():
    img = np.arange(10 * 10 * 3, dtype=np.float32).reshape(10, 10, 3)
    patches = crop_patches(img, np.array([[0.0, 0.0, 10.0, 10.0], [-5.0, -5.0, 5.0, 5.0]]), 10)
    assert patches.shape == (2, 3, 10, 10)
    np.testing.assert_allclose(patches[0], img.transpose(2, 0, 1))
    np.testing.assert_allclose(patches[1][:, :5, :], 0)  # the part above the image is zero
    np.testing.assert_allclose(patches[1][:, 5:, 5:], img[:5, :5].transpose(2, 0, 1))


def test_pyramid_scales():
    scales = pyramid_scales(512, 400, 40)
    assert scales[0] == 12 / 40
    np.testing.assert_allclose(np.diff(np.log(scales)), np.log(0.709))
    assert 400 * scales[-1] >= 12 > 400 * scales[-1] * 0.709
    assert pyramid_scales(30, 30, 40) == []
