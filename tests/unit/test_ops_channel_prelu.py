"""ChannelPReLU with gluonface.ops: which formulation each graph gets, and that training is unchanged by it.

Numerics of the kernel itself are in test_ops_prelu.py; here: imperative and hybridized (with and without
static_alloc/static_shape) runs agree with the MXNet formulation to round-off, exported traces keep standard
operators, accumulation (grad_req='add') and the switches fall back, a missing library falls back, and the
slope gradient does not depend on the number of OpenMP threads.
"""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

import gluonface.ops as ops
from gluonface.models import get_model
from gluonface.models.layers import ChannelPReLU

U = 2.0 ** -24
HYBRID_MODES = [None, {}, {"static_alloc": True}, {"static_alloc": True, "static_shape": True}]


@pytest.fixture(autouse=True)
def _restore_switch():
    ops.set_enabled(True)   # opt-in (gluonface.ops.library): these tests compare the kernels with MXNet's
    assert ops.status()["backend"] == "native", ops.status()["reason"]
    yield
    ops.set_enabled(None)


def _graph_ops(block, x):
    """Operator names of the graph a hybridized block executes (its cached graph)."""
    sym = block._cached_graph[1]
    return {n["op"] for n in json.loads(sym.tojson())["nodes"]}


def _block_step(native, hybrid, grad_req="write", steps=1):
    ops.set_enabled(native)
    mx.random.seed(7)  # same initial weights in every arm
    net = gluon.nn.HybridSequential()  # conv → BN → PReLU, twice, as separate layers (not conv_bn's fusion)
    for ch, k in ((6, 3), (5, 1)):
        net.add(gluon.nn.Conv2D(ch, k, padding=k // 2, use_bias=False), gluon.nn.BatchNorm(), ChannelPReLU(ch))
    net.initialize(mx.init.Xavier())
    for p in net.collect_params(".*alpha").values():
        p.set_data(mx.nd.array(np.linspace(-0.3, 0.9, p.shape[0]).reshape(p.shape)))
        p.grad_req = grad_req
    if hybrid is not None:
        net.hybridize(**hybrid)
    x = mx.nd.array(np.random.RandomState(0).standard_normal((2, 3, 9, 7)).astype(np.float32))
    for _ in range(steps):
        with autograd.record():
            y = net(x)
        y.backward(mx.nd.ones_like(y) * 0.5)
    grads = {k.split("_", 1)[1]: p.grad().asnumpy() for k, p in net.collect_params().items()
             if p.grad_req != "null"}
    return net, x, y.asnumpy(), grads


@pytest.mark.parametrize("hybrid", HYBRID_MODES, ids=["imperative", "hybrid", "static_alloc", "static_shape"])
def test_native_and_mxnet_formulations_train_alike(hybrid):
    net_n, x, y_n, g_n = _block_step(True, hybrid)
    _, _, y_m, g_m = _block_step(False, hybrid)
    if hybrid is not None:
        assert "_gluonface_prelu" in _graph_ops(net_n, x)
    # Both graphs differ only in PReLU's round-off (a few u relative), which the convolutions and BatchNorms
    # carry on; 1e-4 of each tensor's scale is ~1000 u, far below any wrong gradient.
    np.testing.assert_allclose(y_n, y_m, rtol=0, atol=1e-4 * np.abs(y_m).max())
    for name in g_m:
        scale = np.abs(g_m[name]).max()
        np.testing.assert_allclose(g_n[name], g_m[name], rtol=0, atol=1e-4 * scale + 1e-30, err_msg=name)


def test_exported_trace_keeps_standard_operators():
    """gluonface's exporter traces net(sym.var('data')): no custom op may leave the process."""
    from gluonface.export.symbol import embedding_symbol
    net = get_model("iresnet_tiny", embedding_size=16)
    net.initialize()
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.ones((1, 3, 32, 32))
    net(x)
    assert any(op.startswith("_gluonface") for op in _graph_ops(net, x))  # executed graph: native
    sym, _, _ = embedding_symbol(net)
    nodes = {n["op"] for n in json.loads(sym.tojson())["nodes"]}
    assert not any(op.startswith("_gluonface") for op in nodes)
    assert "_minimum_scalar" in nodes  # the MXNet formulation of ChannelPReLU


def test_grad_req_add_uses_mxnet_formulation_and_accumulates():
    net, x, _, g_add = _block_step(True, {"static_alloc": True}, grad_req="add", steps=2)
    assert "_gluonface_prelu" not in _graph_ops(net, x)
    _, _, _, g_once = _block_step(True, {"static_alloc": True}, grad_req="write", steps=1)
    assert any(name.endswith("alpha") for name in g_once)
    for name in g_once:
        times = 2 if name.endswith("alpha") else 1  # only the slopes accumulate
        # the two runs use different formulations: round-off apart (see the test above for the scale)
        np.testing.assert_allclose(g_add[name], times * g_once[name], rtol=0,
                                   atol=1e-4 * times * np.abs(g_once[name]).max(), err_msg=name)


@pytest.mark.parametrize("hybrid", HYBRID_MODES[1:], ids=["hybrid", "static_alloc", "static_shape"])
def test_frozen_slopes_keep_native_kernel(hybrid):
    """grad_req='null' slopes: the kernel's slope gradient has nowhere to go, the data gradient is intact."""
    net_n, x, y_n, g_n = _block_step(True, hybrid, grad_req="null")
    assert "_gluonface_prelu" in _graph_ops(net_n, x)
    _, _, y_m, g_m = _block_step(False, hybrid, grad_req="null")
    assert g_n.keys() == g_m.keys() and not any(k.endswith("alpha") for k in g_n)
    for name in g_m:
        np.testing.assert_allclose(g_n[name], g_m[name], rtol=0, atol=1e-4 * np.abs(g_m[name]).max(),
                                   err_msg=name)


def test_switch_off_gives_mxnet_formulation():
    net, x, _, _ = _block_step(False, {})
    assert "_gluonface_prelu" not in _graph_ops(net, x)
    st = ops.status()
    assert st["backend"] == "mxnet" and "switched off" in st["reason"]


def _python(code, **env):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


_TRAIN_ONE = """
import json, mxnet as mx, gluonface.ops as ops
from mxnet import autograd
from gluonface.models import get_model
{setup}
net = get_model('iresnet_tiny', embedding_size=8); net.initialize(); net.hybridize(static_alloc=True)
with autograd.record():
    y = net(mx.nd.ones((2, 3, 32, 32)))
y.backward()
ops_in_graph = sorted({{n['op'] for n in json.loads(net._cached_graph[1].tojson())['nodes']}})
print(json.dumps({{'status': ops.status(),
                  'native_in_graph': any(op.startswith('_gluonface') for op in ops_in_graph)}}))
"""


def test_default_is_the_mxnet_formulation_and_the_environment_opts_in():
    """Off unless asked for (measured no faster, gluonface.ops.library); GLUONFACE_NATIVE=1 turns it on."""
    env = {k: v for k, v in os.environ.items() if k != "GLUONFACE_NATIVE"}
    proc = subprocess.run([sys.executable, "-c", _TRAIN_ONE.format(setup="")], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"]["backend"] == "mxnet" and out["status"]["reason"].startswith("off by default")
    assert "GLUONFACE_NATIVE=1" in out["status"]["reason"] and not out["native_in_graph"]
    out = json.loads(_python(_TRAIN_ONE.format(setup=""), GLUONFACE_NATIVE="1"))
    assert out["status"]["backend"] == "native" and out["native_in_graph"]


def test_environment_switch_forces_fallback():
    out = json.loads(_python(_TRAIN_ONE.format(setup=""), GLUONFACE_NATIVE="0"))
    assert out["status"]["backend"] == "mxnet" and "GLUONFACE_NATIVE" in out["status"]["reason"]
    assert not out["native_in_graph"]


def test_missing_library_falls_back_with_the_fix_named():
    setup = "import gluonface.ops.library as L; L.library_path = lambda: '/nonexistent/libgluonface_ops.so'"
    out = json.loads(_python(_TRAIN_ONE.format(setup=setup), GLUONFACE_NATIVE="1"))
    assert out["status"]["backend"] == "mxnet" and "make install" in out["status"]["reason"]
    assert not out["native_in_graph"]


_SLOPE_GRAD = """
import numpy as np, mxnet as mx
from mxnet import autograd
rng = np.random.RandomState(3)
x = mx.nd.array(rng.standard_normal((4, 24, 40, 40)).astype(np.float32))
a = mx.nd.array(np.full((24, 1, 1, 1), 0.25, np.float32)); a.attach_grad()
import gluonface.ops as ops; assert ops.native_active()
with autograd.record():
    y = mx.nd._internal._gluonface_prelu(x, a)
y.backward(mx.nd.array(rng.standard_normal(y.shape).astype(np.float32)))
print(a.grad.asnumpy().tobytes().hex())
"""


def test_slope_gradient_does_not_depend_on_thread_count():
    one = _python(_SLOPE_GRAD, OMP_NUM_THREADS="1", GLUONFACE_NATIVE="1")
    two = _python(_SLOPE_GRAD, OMP_NUM_THREADS="2", GLUONFACE_NATIVE="1")
    three = _python(_SLOPE_GRAD, OMP_NUM_THREADS="3", GLUONFACE_NATIVE="1")
    assert one == two == three


def test_switching_ops_one_by_one():
    """set_enabled(("prelu",)): conv_bn keeps MXNet's BatchNorm and runs the native PReLU after it."""
    from gluonface.errors import GluonFaceError
    from gluonface.models.layers import conv_bn
    ops.set_enabled(("prelu",))
    assert ops.status()["backend"] == "native" and "bn_prelu" in ops.status()["reason"]
    net = conv_bn(4, 3, 1, 1, act=True)
    net.initialize()
    net.hybridize()
    x = mx.nd.ones((1, 2, 5, 5))
    net(x)
    graph = _graph_ops(net, x)
    assert "_gluonface_prelu" in graph and "_gluonface_bn_prelu" not in graph and "BatchNorm" in graph
    with pytest.raises(GluonFaceError, match="unknown native ops"):
        ops.set_enabled(("prelu", "conv"))
