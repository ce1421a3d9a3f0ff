"""gluonface.ops' native PReLU against a float64 NumPy oracle and against the MXNet formulation.

Tolerances come from the arithmetic (u = 2^-24, float32 unit round-off):
- forward and d_data are one float32 product each (a·x, a·dy), so they must equal the float64 oracle rounded
  once to float32, bit for bit, on every instruction-set path;
- d_alpha sums m products in double (each product of two floats is exact in double) and rounds once:
  |err| <= u·|S| + m·2^-53·Σ|t| against the exactly rounded sum S (math.fsum);
- the MXNet formulation x + fl(fl(a − 1)·x) rounds three times: |diff| <= 2u·(1 + |a| + |a − 1|)·|x| per
  element; its slope gradient is a float32 reduction of m terms: |diff| <= (m + 1)·u·Σ|t|.
Every instruction-set path the CPU supports is forced in turn (``gluonface.ops.set_isa``); a path the CPU
cannot run is skipped by the library's own CPU probe, never by vendor name.
"""
import math
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import gluonface.ops as ops
from gluonface.models.layers import ChannelPReLU
from gluonface.ops.library import ISAS
from gluonface.ops.prelu import channel_prelu

U = 2.0 ** -24
SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 17, 9, 11), (3, 20, 13, 1), (2, 33, 31, 37), (4, 5), (2, 6, 15)]


@pytest.fixture(scope="module", autouse=True)
def _native_loaded():
    ops.set_enabled(True)   # opt-in (gluonface.ops.library): these tests are about the kernels
    st = ops.status()
    assert st["backend"] == "native", f"native ops must be built by `make install`: {st['reason']}"
    yield
    ops.set_isa(ops.supported_isas()[-1])
    ops.set_enabled(None)


@pytest.fixture(params=ISAS)
def isa(request):
    if request.param not in ops.supported_isas():
        pytest.skip(f"this CPU cannot run the {request.param} kernels (library probe)")
    ops.set_isa(request.param)
    assert ops.isa() == request.param
    yield request.param
    ops.set_isa(ops.supported_isas()[-1])


def _data(shape, seed):
    rng = np.random.RandomState(seed)
    x = rng.standard_normal(shape).astype(np.float32) * np.float32(3.0)
    x.flat[:: 7] = 0.0  # exact zeros: the kink, where both formulations give alpha·dy
    x.flat[3:: 11] = -0.0
    c = shape[1]
    alpha = np.linspace(-0.7, 1.3, c).astype(np.float32) if c > 1 else np.array([0.25], np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, alpha, dy


def _oracle(x, alpha, dy):
    """float64 y, d_data, and exactly rounded d_alpha sums with their Σ|t| and term counts."""
    a = alpha.astype(np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    y = np.where(x64 > 0, x64, a * x64)
    dx = np.where(x64 > 0, dy64, a * dy64)
    terms = np.moveaxis(np.minimum(x64, 0) * dy64, 1, 0).reshape(x.shape[1], -1)
    da = np.array([math.fsum(t) for t in terms])
    return y, dx, da, np.abs(terms).sum(axis=1), terms.shape[1]


def _run(x, alpha, dy, native):
    xs, a = mx.nd.array(x), mx.nd.array(alpha.reshape(-1, 1, 1, 1))
    xs.attach_grad()
    a.attach_grad()
    with autograd.record():
        if native:
            y = mx.nd._internal._gluonface_prelu(xs, a)
        else:
            y = channel_prelu(mx.nd, xs, a, x.shape[1], native=False)
    y.backward(mx.nd.array(dy))
    return y.asnumpy(), xs.grad.asnumpy(), a.grad.asnumpy().ravel()


@pytest.mark.parametrize("shape", SHAPES)
def test_native_prelu_matches_float64_oracle(isa, shape):
    x, alpha, dy = _data(shape, seed=len(shape) + shape[1])
    y, dx, da = _run(x, alpha, dy, native=True)
    y64, dx64, da64, abs_sum, m = _oracle(x, alpha, dy)
    np.testing.assert_array_equal(y, y64.astype(np.float32))
    np.testing.assert_array_equal(dx, dx64.astype(np.float32))
    bound = U * np.abs(da64) + m * 2.0 ** -53 * abs_sum
    assert np.all(np.abs(da - da64) <= bound), (da - da64, bound)


@pytest.mark.parametrize("shape", [s for s in SHAPES if len(s) == 4])
def test_native_prelu_matches_mxnet_formulation(isa, shape):
    x, alpha, dy = _data(shape, seed=1)
    y_n, dx_n, da_n = _run(x, alpha, dy, native=True)
    y_m, dx_m, da_m = _run(x, alpha, dy, native=False)
    a = np.abs(alpha.astype(np.float64)).reshape(1, -1, 1, 1)
    am1 = np.abs(alpha.astype(np.float64) - 1).reshape(1, -1, 1, 1)
    scale = 2 * U * (1 + a + am1)
    assert np.all(np.abs(y_n - y_m) <= scale * np.abs(x)), "forward differs beyond round-off"
    assert np.all(np.abs(dx_n - dx_m) <= scale * np.abs(dy)), "data gradient differs beyond round-off"
    _, _, _, abs_sum, m = _oracle(x, alpha, dy)
    assert np.all(np.abs(da_n - da_m) <= (m + 1) * U * abs_sum + 1e-30), "slope gradient differs"


def test_every_path_gives_the_same_result_up_to_the_double_sum():
    """Forward and d_data are bit-identical across paths; d_alpha differs at most by the double-sum bound."""
    x, alpha, dy = _data((2, 19, 23, 29), seed=5)
    results = {}
    for name in ops.supported_isas():
        ops.set_isa(name)
        results[name] = _run(x, alpha, dy, native=True)
    _, _, da64, abs_sum, m = _oracle(x, alpha, dy)
    ref = results["generic"]
    for name, (y, dx, da) in results.items():
        np.testing.assert_array_equal(y, ref[0], err_msg=name)
        np.testing.assert_array_equal(dx, ref[1], err_msg=name)
        assert np.all(np.abs(da - ref[2]) <= 2 * (U * np.abs(da64) + m * 2.0 ** -53 * abs_sum)), name


def test_unsupported_or_unknown_path_is_refused():
    from gluonface.errors import GluonFaceError
    with pytest.raises(GluonFaceError, match="unknown instruction set"):
        ops.set_isa("sse9")
    missing = [n for n in ISAS if n not in ops.supported_isas()]
    for name in missing:
        with pytest.raises(GluonFaceError, match="cannot run"):
            ops.set_isa(name)
    assert ops.supported_isas()[0] == "generic"
