"""Comparisons of float32 network outputs whose tolerances follow from the arithmetic, not from one CPU.

Two float32 evaluations of the same network that differ only in how the sums are formed (oneDNN's AVX2 or
AVX-512 kernels, another batch size, a folded graph, a fused subgraph, ONNX Runtime) do not agree bit for
bit. A dot product of K terms carries a rounding error of about sqrt(K) * 2^-24 of the sum of its terms'
magnitudes; with K up to ~5000 (3x3x512 convolutions) and a few dozen layers in a row, the outputs agree to
~1e-5 of the largest output magnitude, so:

* raw outputs are compared with an absolute tolerance of ``REL`` times the largest magnitude
  (``assert_close_scaled``): 10x that estimate, far below what a wrong operator gives (~1e-1 or worse);
* embeddings, which are compared by direction in use, are compared by per-row cosine
  (``assert_same_direction``): a relative error e changes the cosine by ~e^2/2, so 1 - 1e-6 leaves a wide
  margin for rounding and none for a bug.

Never an absolute tolerance tuned to the rounding of the machine the test was written on.
"""
import numpy as np

REL = 1e-4
MIN_COSINE = 1 - 1e-6


def assert_close_scaled(got, want, rel=REL, err_msg=""):
    """``|got - want| <= rel * max|want|`` elementwise."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape, err_msg)
    scale = float(np.abs(want).max()) or 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * scale, err_msg=err_msg)


def row_cosines(got, want):
    got, want = np.atleast_2d(np.asarray(got, np.float64)), np.atleast_2d(np.asarray(want, np.float64))
    assert got.shape == want.shape, (got.shape, want.shape)
    return (got * want).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-300)


def assert_same_direction(got, want, min_cosine=MIN_COSINE, err_msg=""):
    """Every row of ``got`` points where the same row of ``want`` does (cosine >= ``min_cosine``)."""
    cos = row_cosines(got, want)
    assert cos.min() >= min_cosine, f"min cosine {cos.min():.9f} < {min_cosine} {err_msg}"
