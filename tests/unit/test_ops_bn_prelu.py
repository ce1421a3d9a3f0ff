"""The native BatchNorm + PReLU op against a float64 NumPy oracle, and ConvBNSequence against MXNet's layers.

Bounds follow the kernel's arithmetic (u = 2^-24; sums run in double, m·2^-53 per term):
- z = fl(x·s + b) with s = fl(γ·fl(invstd)), b = fl(β − fl(fl(μ)·s)): |z − z64| <= u·(3|x·s| + 5|μ·s| + |β| + |z|)
  =: Bz; y = PReLU(z): |y − y64| <= max(1, |α|)·Bz + u·|α·z|;
- d_beta = Σg, g = fl(α·dy): u·|Σg| + u·Σ|g| + m·2^-53·Σ|g|;
- d_gamma = fl(invstd)·Σ g·(x − fl(μ)): invstd·(3u·Σ|g·(x − μ)| + u·|μ|·|Σg|) + u·|d_gamma|;
- d_alpha = Σ min(z, 0)·dy: Σ Bz·|dy| + u·|d_alpha| + m·2^-53·Σ|z·dy|;
- dx = k1·g + k2·(x − μ) + k3 (k rounded once from double): 8u·(|k1·g| + |k2·(x − μ)| + |k3|) + u·|k2·μ|
  + u·|γ|·invstd·Σ|g|/m + u·|γ|·invstd³·(Σ|g·(x − μ)| + |μ|·|Σg|)·|x − μ|/m.
The data keep every |z| above its bound, so no PReLU mask can flip between kernel and oracle.
"""
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

import gluonface.ops as ops
from gluonface.models import get_model
from gluonface.models.layers import conv_bn
from gluonface.ops.library import ISAS

U = 2.0 ** -24
EPS, MOMENTUM = 2e-5, 0.9
SHAPES = [(1, 1, 3, 1), (2, 3, 5, 7), (1, 17, 9, 11), (3, 20, 13, 1), (2, 33, 31, 37)]


@pytest.fixture(autouse=True)
def _opt_in():
    ops.set_enabled(True)   # opt-in (gluonface.ops.library): these tests are about the kernels
    yield
    ops.set_enabled(None)


@pytest.fixture(params=ISAS)
def isa(request):
    assert ops.status()["backend"] == "native", ops.status()["reason"]
    if request.param not in ops.supported_isas():
        pytest.skip(f"this CPU cannot run the {request.param} kernels (library probe)")
    ops.set_isa(request.param)
    yield request.param
    ops.set_isa(ops.supported_isas()[-1])


def _inputs(shape, seed):
    rng = np.random.RandomState(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2.0 + 0.5).astype(np.float32)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    params = dict(gamma=f32(rng.uniform(0.5, 1.5, c)), beta=f32(rng.uniform(-0.3, 0.3, c)),
                  mm=f32(rng.uniform(-0.2, 0.2, c)), mv=f32(rng.uniform(0.5, 2.0, c)),
                  alpha=f32(np.linspace(-0.5, 1.2, c) if c > 1 else [0.25]))
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, params, dy


def _run_op(x, p, dy, train):
    nd = {k: mx.nd.array(v) for k, v in p.items()}
    xs = mx.nd.array(x)
    alpha = nd["alpha"].reshape((-1, 1, 1, 1))
    for a in (xs, nd["gamma"], nd["beta"], alpha):
        a.attach_grad()
    mode = mx.nd.array([0.0 if train else 1.0])
    with autograd.record():
        y, mean, invstd = mx.nd._internal._gluonface_bn_prelu(
            xs, nd["gamma"], nd["beta"], nd["mm"], nd["mv"], alpha, mode, eps=EPS, momentum=MOMENTUM)
    y.backward(mx.nd.array(dy))
    return dict(y=y.asnumpy(), mean=mean.asnumpy(), invstd=invstd.asnumpy(), dx=xs.grad.asnumpy(),
                dgamma=nd["gamma"].grad.asnumpy(), dbeta=nd["beta"].grad.asnumpy(),
                dalpha=alpha.grad.asnumpy().ravel(), mm=nd["mm"].asnumpy(), mv=nd["mv"].asnumpy())


def _oracle(x, p, dy, train):
    """float64 results and the per-element / per-channel bounds of the module docstring."""
    c = x.shape[1]
    bc = lambda v: np.asarray(v, np.float64).reshape((1, c) + (1,) * (x.ndim - 2))  # noqa: E731
    axes = tuple(i for i in range(x.ndim) if i != 1)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    m = x.size // c
    if train:
        mu = x64.mean(axis=axes)
        var = ((x64 - bc(mu)) ** 2).mean(axis=axes)
    else:
        mu, var = p["mm"].astype(np.float64), p["mv"].astype(np.float64)
    inv = 1.0 / np.sqrt(var + np.float64(np.float32(EPS)))
    gam, bet, al = bc(p["gamma"]), bc(p["beta"]), bc(p["alpha"])
    s = gam * bc(inv)
    xm = x64 - bc(mu)
    z = xm * s + bet
    y = np.where(z > 0, z, al * z)
    bz = U * (3 * np.abs(x64 * s) + 5 * np.abs(bc(mu) * s) + np.abs(bet) + np.abs(z))
    assert np.all(np.abs(z) > 2 * bz), "test data too close to the PReLU kink"
    g = np.where(z > 0, dy64, al * dy64)
    sg, sgx = g.sum(axis=axes), (g * xm).sum(axis=axes)
    sabs_g, sabs_gx = np.abs(g).sum(axis=axes), np.abs(g * xm).sum(axis=axes)
    r = dict(y=y, mean=mu, invstd=inv, dbeta=sg, dgamma=sgx * inv,
             dalpha=(np.minimum(z, 0) * dy64).sum(axis=axes))
    k1 = gam * bc(inv)
    k2 = -gam * bc(inv ** 3 * sgx / m) if train else 0 * gam
    k3 = -gam * bc(inv * sg / m) if train else 0 * gam
    r["dx"] = k1 * g + k2 * xm + k3
    b = dict(y=np.maximum(1, np.abs(al)) * bz + U * np.abs(al * z),
             mean=U * np.abs(mu) + 2.0 ** -50 * np.abs(x64).max(), invstd=2 * U * inv,
             dbeta=U * np.abs(sg) + U * sabs_g + m * 2.0 ** -53 * sabs_g,
             dgamma=inv * (3 * U * sabs_gx + U * np.abs(mu) * np.abs(sg)) + U * np.abs(sgx * inv),
             dalpha=(bz * np.abs(dy64)).sum(axis=axes) + U * np.abs(r["dalpha"])
             + m * 2.0 ** -53 * np.abs(z * dy64).sum(axis=axes))
    b["dx"] = 8 * U * (np.abs(k1 * g) + np.abs(k2 * xm) + np.abs(k3)) + U * np.abs(k2 * bc(mu))
    if train:
        b["dx"] = b["dx"] + U * np.abs(gam) * bc(inv * sabs_g / m) \
            + U * np.abs(gam) * bc(inv ** 3 * (sabs_gx + np.abs(mu) * np.abs(sg)) / m) * np.abs(xm)
    return r, b, mu, var


@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("shape", SHAPES)
def test_bn_prelu_matches_float64_oracle(isa, shape, train):
    x, p, dy = _inputs(shape, seed=shape[1] + len(shape))
    got = _run_op(x, p, dy, train)
    ref, bound, mu, var = _oracle(x, p, dy, train)
    for key in ("y", "mean", "invstd", "dx", "dgamma", "dbeta", "dalpha"):
        err = np.abs(got[key] - ref[key])
        assert np.all(err <= bound[key]), (key, float((err / np.maximum(bound[key], 1e-300)).max()))
    if train:  # MXNet's float update keep·moving + take·batch, keep = fl(0.9), take = 1 − keep (exact)
        keep = np.float64(np.float32(MOMENTUM))
        take = 1.0 - keep
        for key, old, new in (("mm", p["mm"], mu), ("mv", p["mv"], var)):
            expect = old.astype(np.float64) * keep + new * take
            tol = 3 * U * (np.abs(old) * keep + np.abs(new) * take)
            assert np.all(np.abs(got[key] - expect) <= tol), key
    else:  # inference leaves the moving statistics alone
        np.testing.assert_array_equal(got["mm"], p["mm"])
        np.testing.assert_array_equal(got["mv"], p["mv"])


def _graph_ops(block):
    return {n["op"] for n in json.loads(block._cached_graph[1].tojson())["nodes"]}


def _two_layers(native, hybrid, steps=2, grad_req="write"):
    ops.set_enabled(native)
    mx.random.seed(7)
    net = gluon.nn.HybridSequential()
    net.add(conv_bn(6, 3, 1, 1, act=True), conv_bn(5, 1, act=True), conv_bn(4, 1, act=False))
    net.initialize(mx.init.Xavier())
    for name, prm in net.collect_params().items():
        if name.endswith(("gamma", "beta", "alpha")):
            prm.grad_req = grad_req
    if hybrid is not None:
        net.hybridize(**hybrid)
    rng = np.random.RandomState(0)
    x = mx.nd.array(rng.standard_normal((4, 3, 9, 7)).astype(np.float32) + 0.3)
    dy = mx.nd.array(rng.standard_normal((4, 4, 9, 7)).astype(np.float32))
    # Deferred parameters are initialised in an inference call, as gluonface.engine.build does: a training
    # call of the fused op draws one random number (its mode flag) before the next layer's initialiser runs.
    net(x)
    for _ in range(steps):
        with autograd.record():
            y = net(x)
        y.backward(dy)
    y_inf = net(x)  # inference: moving statistics
    values = [(p.grad() if p.grad_req != "null" else p.data()).asnumpy()
              for p in net.collect_params().values()]
    return net, y.asnumpy(), y_inf.asnumpy(), values


@pytest.fixture
def _switch_back():
    yield
    ops.set_enabled(True)


@pytest.mark.usefixtures("_switch_back")
@pytest.mark.parametrize("hybrid", [None, {}, {"static_alloc": True, "static_shape": True}],
                         ids=["imperative", "hybrid", "static"])
def test_conv_bn_sequence_trains_like_mxnet_layers(hybrid):
    """Outputs, every gradient, the running statistics after two steps and the inference output agree with
    MXNet's BatchNorm + PReLU to float32 round-off carried through two layers (1e-5 of each tensor's scale)."""
    net, y_n, yi_n, v_n = _two_layers(True, hybrid)
    if hybrid is not None:
        assert "_gluonface_bn_prelu" in _graph_ops(net)
    _, y_m, yi_m, v_m = _two_layers(False, hybrid)
    for got, want in [(y_n, y_m), (yi_n, yi_m)] + list(zip(v_n, v_m)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max() + 1e-30)


def test_parameter_names_and_exported_trace_are_unchanged():
    from gluonface.export.symbol import embedding_symbol
    names = {}
    for native in (True, False):
        ops.set_enabled(native)
        net = get_model("mobilefacenet", embedding_size=16, input_size=32)
        net.initialize()
        net.hybridize(static_alloc=True)
        net(mx.nd.ones((1, 3, 32, 32)))
        # the structural names save_parameters writes, with their shapes
        names[native] = sorted((k, v.shape) for k, v in net._collect_params_with_prefix().items())
        sym, _, _ = embedding_symbol(net)
        exported = {n["op"] for n in json.loads(sym.tojson())["nodes"]}
        assert not any(op.startswith("_gluonface") for op in exported)
        assert "BatchNorm" in exported
        assert ("_gluonface_bn_prelu" in _graph_ops(net)) == native
    ops.set_enabled(True)
    assert names[True] == names[False]


def test_accumulated_gradients_fall_back():
    net, _, _, _ = _two_layers(True, {"static_alloc": True}, steps=1, grad_req="add")
    assert "_gluonface_bn_prelu" not in _graph_ops(net)
