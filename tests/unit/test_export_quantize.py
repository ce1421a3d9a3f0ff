"""The INT8 model is checked against float32 on the calibration faces and refused below the bar."""
import numpy as np
import pytest

from gluonface.errors import GluonFaceError
from gluonface.export.quantize import INT8_MIN_COSINE, check_against_float32

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
W = RNG.normal(size=(3 * 8 * 8, 16))


def _fp32(x):
    return x.reshape(len(x), -1) @ W


def test_close_int8_passes_with_its_cosines():
    noisy = lambda x: _fp32(x) * (1 + 1e-3 * RNG.normal(size=(len(x), 16)))  # noqa: E731
    report = check_against_float32(noisy, _fp32, IMAGES, batch_size=16)
    assert report["images"] == 40 and INT8_MIN_COSINE < report["min_cosine"] <= report["mean_cosine"] <= 1.0


def test_a_broken_int8_model_is_refused_naming_the_cosine_and_the_fix():
    # One image in 40 goes wrong: the bar is per image, so the mean alone could not hide it.
    def broken(x):
        out = _fp32(x)
        out[0] = RNG.normal(size=16) * np.linalg.norm(out[0])
        return out
    with pytest.raises(GluonFaceError, match=r"min cosine .*bar 0\.99.*fix:"):
        check_against_float32(broken, _fp32, IMAGES, batch_size=16)
