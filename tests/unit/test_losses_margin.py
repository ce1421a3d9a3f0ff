"""Margin losses against the NumPy reference: values and gradients (float64), branches, presets, names."""
import math

import mxnet as mx
import numpy as np
import pytest

import numpy_reference as ref
from gluonface.errors import GluonFaceError
from gluonface.losses import get_loss, list_losses
from gluonface.losses.margin import margin_cos

C, E = 5, 6
PRESETS = {  # name → (s, m1, m2, m3) expected from the preset table
    "arcface": (64.0, 1.0, 0.5, 0.0),
    "cosface": (64.0, 1.0, 0.0, 0.35),
    "sphereface": (64.0, 1.35, 0.0, 0.0),
    "combined": (64.0, 1.0, 0.3, 0.2),
}


def _loss64(name, **kw):
    loss = get_loss(name, C, E, compute_dtype="float64", **kw)
    loss.initialize(mx.init.Normal(0.5))
    loss.cast("float64")
    return loss


def _run(loss, x, y):
    """Forward + backward of the summed loss; returns (per-sample loss, d/dx, d/dweight) as float64."""
    xn = mx.nd.array(x, dtype="float64")
    xn.attach_grad()
    with mx.autograd.record():
        out = loss(xn, mx.nd.array(y))
    out.backward()
    return out.asnumpy(), xn.grad.asnumpy(), loss.weight.grad().asnumpy()


def _data(seed, n=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, E)), rng.integers(0, C, size=n)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("hybrid", [False, True])
def test_margin_loss_matches_reference_values_and_gradients(name, hybrid):
    s, m1, m2, m3 = PRESETS[name]
    s = 4.0  # a small scale keeps the softmax away from saturation so the gradients are informative
    loss = _loss64(name, s=s)
    if hybrid:
        loss.hybridize()
    x, y = _data(1)
    out, gx, gw = _run(loss, x, y)
    w = loss.weight.data().asnumpy()
    np.testing.assert_allclose(out, ref.margin_softmax_loss(x, y, w, s, m1, m2, m3), rtol=1e-7, atol=1e-9)
    fx = lambda v: ref.margin_softmax_loss(v, y, w, s, m1, m2, m3).sum()
    fw = lambda v: ref.margin_softmax_loss(x, y, v, s, m1, m2, m3).sum()
    np.testing.assert_allclose(gx, ref.numeric_grad(fx, x.copy()), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gw, ref.numeric_grad(fw, w.copy()), rtol=1e-5, atol=1e-7)


def _embeddings_at_angle(w, labels, degrees, rng):
    """Embeddings making exactly ``degrees`` with their (normalised) target centre."""
    x = []
    for c, deg in zip(labels, degrees):
        u = w[c] / np.linalg.norm(w[c])
        v = rng.normal(size=u.shape)
        v -= v.dot(u) * u
        v /= np.linalg.norm(v)
        t = math.radians(deg)
        x.append((math.cos(t) * u + math.sin(t) * v) * rng.uniform(0.5, 3.0))
    return np.array(x)


@pytest.mark.parametrize("easy_margin", [False, True])
def test_arcface_theta_plus_m_beyond_pi_branch(easy_margin):
    loss = _loss64("arcface", s=2.0, easy_margin=easy_margin)
    w = loss.weight.data().asnumpy()
    rng = np.random.default_rng(3)
    y = np.array([0, 1, 2, 3, 4, 0, 1])
    # 160°, 170°, 155° lie beyond π − m (151.4°); 100°, 92° have cos < 0 (easy_margin keeps them).
    degrees = [160.0, 170.0, 100.0, 40.0, 60.0, 155.0, 92.0]
    x = _embeddings_at_angle(w, y, degrees, rng)
    out, gx, gw = _run(loss, x, y)
    np.testing.assert_allclose(out, ref.margin_softmax_loss(x, y, w, 2.0, 1.0, 0.5, 0.0, easy_margin),
                               rtol=1e-7, atol=1e-9)
    fx = lambda v: ref.margin_softmax_loss(v, y, w, 2.0, 1.0, 0.5, 0.0, easy_margin).sum()
    np.testing.assert_allclose(gx, ref.numeric_grad(fx, x.copy()), rtol=1e-5, atol=1e-7)


def test_margin_cos_branches_by_hand():
    m = 0.5
    th = math.cos(math.pi - m)
    cos = np.array([0.9, 0.1, 0.02, -0.02, -0.5, th - 0.05, -0.99])
    got = margin_cos(mx.nd, mx.nd.array(cos, dtype="float64"), 1.0, m, 0.0).asnumpy()
    want = [math.cos(math.acos(c) + m) if c > th else c - m * math.sin(m) for c in cos]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # easy margin: only cos > 0 gets the margin, no fallback
    got = margin_cos(mx.nd, mx.nd.array(cos, dtype="float64"), 1.0, m, 0.0, easy_margin=True).asnumpy()
    want = [math.cos(math.acos(c) + m) if c > 0 else c for c in cos]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # the fallback keeps the target logit decreasing in θ across the threshold
    grid = np.cos(np.radians(np.linspace(0.5, 179.5, 400)))
    vals = margin_cos(mx.nd, mx.nd.array(grid, dtype="float64"), 1.0, m, 0.0).asnumpy()
    assert np.all(np.diff(vals) < 0)
    # cosface fast path and sphereface-style path agree with the oracle
    for m1, m2, m3 in [(1.0, 0.0, 0.35), (1.35, 0.0, 0.0), (2.0, 0.1, 0.1), (1.0, 0.3, 0.2)]:
        got = margin_cos(mx.nd, mx.nd.array(grid, dtype="float64"), m1, m2, m3).asnumpy()
        np.testing.assert_allclose(got, ref.margin_target(grid, m1, m2, m3), rtol=1e-6, atol=1e-9)


def test_margin_cos_symbolic_matches_ndarray():
    cos = np.linspace(-0.999, 0.999, 11)
    sym = margin_cos(mx.sym, mx.sym.var("c"), 1.0, 0.5, 0.0)
    got = sym.eval(c=mx.nd.array(cos))[0].asnumpy()
    np.testing.assert_allclose(got, margin_cos(mx.nd, mx.nd.array(cos), 1.0, 0.5, 0.0).asnumpy(), rtol=1e-6)


def test_subcenter_matches_reference_and_equals_arcface_when_k_is_1():
    x, y = _data(5)
    sub = _loss64("subcenter_arcface", s=4.0)
    assert sub.weight.shape == (C * 3, E)
    out, gx, _ = _run(sub, x, y)
    w = sub.weight.data().asnumpy()
    np.testing.assert_allclose(out, ref.margin_softmax_loss(x, y, w, 4.0, 1.0, 0.5, 0.0, sub_centers=3),
                               rtol=1e-7)
    fx = lambda v: ref.margin_softmax_loss(v, y, w, 4.0, 1.0, 0.5, 0.0, sub_centers=3).sum()
    np.testing.assert_allclose(gx, ref.numeric_grad(fx, x.copy()), rtol=1e-5, atol=1e-7)
    one = _loss64("subcenter_arcface", s=4.0, sub_centers=1)
    arc = _loss64("arcface", s=4.0)
    arc.weight.set_data(one.weight.data())
    np.testing.assert_allclose(_run(one, x, y)[0], _run(arc, x, y)[0], rtol=1e-12)


@pytest.mark.parametrize("use_bias", [True, False])
def test_softmax_matches_reference(use_bias):
    loss = get_loss("softmax", C, E, use_bias=use_bias, compute_dtype="float64")
    loss.initialize(mx.init.Normal(0.5))
    loss.cast("float64")
    if use_bias:
        loss.bias.set_data(mx.nd.array(np.arange(C) * 0.1, dtype="float64"))
    x, y = _data(7)
    out, gx, gw = _run(loss, x, y)
    w = loss.weight.data().asnumpy()
    b = loss.bias.data().asnumpy() if use_bias else None
    np.testing.assert_allclose(out, ref.softmax_loss(x, y, w, b), rtol=1e-9)
    np.testing.assert_allclose(gw, ref.numeric_grad(lambda v: ref.softmax_loss(x, y, v, b).sum(), w.copy()),
                               rtol=1e-5, atol=1e-7)


def test_float32_default_and_weight_layout():
    loss = get_loss("arcface", 10, 8)
    loss.initialize()
    out = loss(mx.nd.random.normal(shape=(4, 8)), mx.nd.array([0, 3, 9, 9]))
    assert out.shape == (4,) and out.dtype == np.float32
    w = loss.weight.data().asnumpy()
    assert w.shape == (10, 8) and 0.005 < w.std() < 0.02  # Normal(0.01)
    assert list(loss.collect_params().keys()) == [loss.weight.name]


def test_presets_and_overrides():
    for name, (s, m1, m2, m3) in PRESETS.items():
        loss = get_loss(name, C, E)
        assert (loss.s, loss.m1, loss.m2, loss.m3) == (s, m1, m2, m3)
    loss = get_loss("arcface", C, E, s=30, m2=0.4, easy_margin=True, m3=None)
    assert (loss.s, loss.m2, loss.m3, loss.easy_margin) == (30.0, 0.4, 0.0, True)


def test_unknown_loss_and_bad_kwargs_name_the_fix():
    with pytest.raises(GluonFaceError) as exc:
        get_loss("arcfase", C, E)
    for name in list_losses():
        assert name in str(exc.value)
    with pytest.raises(GluonFaceError, match="margin"):
        get_loss("arcface", C, E, margin=0.3)
    with pytest.raises(GluonFaceError, match="sub_centers"):
        get_loss("subcenter_arcface", C, E, sub_centers=0)
