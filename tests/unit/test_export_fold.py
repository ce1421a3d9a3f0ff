"""Inference folding (gluonface.export.fold): fewer operators, the same outputs as the NumPy reference."""
import collections
import json

import mxnet as mx
import numpy as np
import pytest

import numpy_reference as ref
from gluonface.export.fold import fold_for_inference, lower_for_onednn
from gluonface.export.symbol import embedding_symbol, symbol_block
from gluonface.models import get_model
from test_models_oracle import _randomise, _ref_block  # the NumPy evaluation of gluonface's blocks

pytestmark = pytest.mark.cpu_paths   # run again on the AVX2 code path (pytest.ini)

RNG = np.random.default_rng(5)
ONEDNN = mx.runtime.Features().is_enabled("MKLDNN")


def _ops(sym):
    return collections.Counter(n["op"] for n in json.loads(sym.tojson())["nodes"] if n["op"] != "null")


def _run(sym, arg, aux, x, backend=None):
    block = symbol_block(sym, dict(arg, **aux))
    block.hybridize(static_alloc=True, **({"backend": backend} if backend else {}))
    return block(mx.nd.array(x)).asnumpy()


@pytest.fixture(scope="module")
def tiny():
    """iresnet_tiny with an 'E' head (Dropout), random BN statistics and PReLU slopes of both signs and > 1,
    its traced symbol, folded symbol and the float64 NumPy reference output."""
    net = get_model("iresnet_tiny", embedding_size=16, head="E", dropout=0.3)
    net.initialize()
    net(mx.nd.zeros((1, 3, 56, 56)))
    _randomise(net)
    alpha = [p for n, p in net.collect_params().items() if n.endswith("alpha")][0]
    alpha.set_data(mx.nd.array(np.linspace(-0.8, 1.6, alpha.shape[0]).reshape(alpha.shape)))
    x = RNG.uniform(0, 255, (3, 3, 56, 56))
    want = _ref_block(net.output, _ref_block(net.features, (x - 127.5) / 128.0))
    traced = embedding_symbol(net)
    return net, x, want, traced, fold_for_inference(*traced, input_shape=(1, 3, 56, 56))


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_fold_removes_operators_and_keeps_outputs(tiny):
    net, x, want, traced, folded = tiny
    before, after = _ops(traced[0]), _ops(folded[0])
    assert (before["BatchNorm"], before["Dropout"], before["Pooling"], before["_minimum_scalar"]) == (15, 1, 1, 4)
    # Left: the IR units' first BatchNorm (before a padded conv) and one LeakyReLU per PReLU.
    assert (after["BatchNorm"], after["LeakyReLU"]) == (3, 4)
    assert not {"Dropout", "Pooling", "_minimum_scalar", "_minus_scalar", "_mul_scalar"} & set(after)
    assert after["Convolution"] == before["Convolution"] - 4 + 1  # the PReLU convs went, the pooling is one
    _close(_run(*traced, x), want)
    _close(_run(*folded, x), want)
    _close(_run(*folded, x), net(mx.nd.array(x)).asnumpy())
    assert _ops(fold_for_inference(*folded, input_shape=(1, 3, 56, 56))[0]) == after  # idempotent


@pytest.mark.parametrize("backend", [None, "MKLDNN"])
def test_onednn_form_keeps_outputs(tiny, backend):
    if backend and not ONEDNN:
        pytest.skip("this MXNet build has no oneDNN")
    _, x, want, _, folded = tiny
    lowered = lower_for_onednn(*folded, input_shape=(1, 3, 56, 56))
    ops = _ops(lowered[0])
    assert "LeakyReLU" not in ops and "BatchNorm" not in ops and ops["Activation"] == 4
    # With oneDNN's partitioner too: it must not fuse the relu into the convolution whose output is summed.
    _close(_run(*lowered, x, backend), want)


def test_rewrites_that_would_not_be_exact_are_left_alone():
    """Scalar ops before a padded conv and a pooling without scalar ops stay; a fix_gamma BN ignores gamma."""
    d = mx.sym.var("data")
    y = mx.sym.Convolution((d - 127.5) * 0.0078125, kernel=(3, 3), pad=(1, 1), num_filter=4, name="c0")
    y = mx.sym.BatchNorm(y, fix_gamma=True, eps=1e-3, name="bn0")
    y = mx.sym.Pooling(y, kernel=(2, 2), stride=(2, 2), pool_type="avg")
    y = mx.sym.BatchNorm(y, fix_gamma=False, eps=2e-5, name="bn1")
    sym = mx.sym.FullyConnected(y, num_hidden=5, name="fc")
    shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=(2, 3, 8, 8))[0]))
    shapes.update(zip(sym.list_auxiliary_states(), sym.infer_shape(data=(2, 3, 8, 8))[2]))
    p = {k: RNG.uniform(0.5, 3.0, s) if k.endswith(("gamma", "var")) else RNG.normal(0, 0.5, s)
         for k, s in shapes.items() if k != "data"}
    arg = {k: mx.nd.array(v) for k, v in p.items() if k in sym.list_arguments()}
    aux = {k: mx.nd.array(v) for k, v in p.items() if k in sym.list_auxiliary_states()}
    x = RNG.uniform(0, 255, (2, 3, 8, 8))
    h = ref.conv2d((x - 127.5) / 128, p["c0_weight"], p["c0_bias"], pad=1)
    h = ref.batchnorm_inference(h, np.ones(4), p["bn0_beta"], p["bn0_moving_mean"], p["bn0_moving_var"], 1e-3)
    h = ref.batchnorm_inference(ref.avg_pool2d(h, 2), p["bn1_gamma"], p["bn1_beta"], p["bn1_moving_mean"],
                                p["bn1_moving_var"], 2e-5)
    want = ref.dense(h, p["fc_weight"], p["fc_bias"])
    folded = fold_for_inference(sym, arg, aux, (1, 3, 8, 8))
    ops = _ops(folded[0])
    assert (ops["_minus_scalar"], ops["_mul_scalar"], ops["Pooling"], ops.get("BatchNorm", 0)) == (1, 1, 1, 0)
    _close(_run(sym, arg, aux, x), want)
    _close(_run(*folded, x), want)
    _close(_run(*lower_for_onednn(*folded, input_shape=(1, 3, 8, 8)), x), want)


def test_mobilefacenet_folds_every_batchnorm_including_the_flattened_gdc():
    """MobileFaceNet's global depthwise conv flattens before its BatchNorm (a oneDNN crash on AVX-512 CPUs,
    see ``models.layers.conv_bn``); folding looks through that Flatten, so no BatchNorm is left."""
    net = get_model("mobilefacenet", embedding_size=16, input_size=64)
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))
    _randomise(net)
    x = RNG.uniform(0, 255, (3, 3, 64, 64))
    want = _ref_block(net.output, _ref_block(net.features, (x - 127.5) / 128.0))
    traced = embedding_symbol(net)
    folded = fold_for_inference(*traced, input_shape=(1, 3, 64, 64))
    before, after = _ops(traced[0]), _ops(folded[0])
    assert before["BatchNorm"] > 40 and before["Flatten"] == 1
    assert after.get("BatchNorm", 0) == 0 and after["Flatten"] == 1
    _close(_run(*folded, x), want)
    _close(_run(*lower_for_onednn(*folded, input_shape=(1, 3, 64, 64)), x), want)


def test_pure_scale_folds_into_a_padded_conv():
    """``x * s`` before a padded convolution is exact to fold (zero padding stays zero); a shift is not."""
    d = mx.sym.var("data")
    sym = mx.sym.Convolution(d * 0.99609375, kernel=(3, 3), pad=(1, 1), num_filter=4, no_bias=True, name="c0")
    w = RNG.normal(0, 0.5, (4, 3, 3, 3))
    arg = {"c0_weight": mx.nd.array(w)}
    x = RNG.uniform(-1, 1, (2, 3, 8, 8))
    want = ref.conv2d(x * 0.99609375, w, np.zeros(4), pad=1)
    folded = fold_for_inference(sym, arg, {}, (1, 3, 8, 8))
    ops = _ops(folded[0])
    assert "_mul_scalar" not in ops and ops["Convolution"] == 1
    _close(_run(*folded, x), want)
    shifted = mx.sym.Convolution(d * 0.5 + 1.0, kernel=(3, 3), pad=(1, 1), num_filter=4, no_bias=True, name="c0")
    assert _ops(fold_for_inference(shifted, arg, {}, (1, 3, 8, 8))[0])["_plus_scalar"] == 1
