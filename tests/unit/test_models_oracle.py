"""Gluon layers and a whole iresnet_tiny against the NumPy reference, in float64, layer by layer."""
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

import numpy_reference as ref
from gluonface.models import get_model
from gluonface.models.iresnet import IRUnit
from gluonface.models.layers import ChannelPReLU, EmbeddingHead
from gluonface.models.mobilefacenet import Bottleneck

RNG = np.random.default_rng(0)


def _p(block, suffix):
    """The numpy value of the parameter of ``block`` whose name ends with ``suffix``."""
    (param,) = [p for n, p in block.collect_params().items() if n.endswith(suffix)]
    return param.data().asnumpy()


def _randomise(net):
    """Random values for every parameter (incl. BN statistics) so no layer is an identity."""
    for name, p in net.collect_params().items():
        if name.endswith("running_var"):
            v = RNG.uniform(0.5, 2.0, size=p.shape)
        elif name.endswith("gamma"):
            v = RNG.uniform(0.5, 1.5, size=p.shape)
        elif name.endswith("alpha"):
            v = RNG.uniform(0.05, 0.5, size=p.shape)
        else:
            v = RNG.normal(0, 0.3, size=p.shape)
        p.set_data(mx.nd.array(v, dtype=p.dtype))


def _bn(block, x):
    return ref.batchnorm_inference(x, _p(block, "gamma"), _p(block, "beta"), _p(block, "running_mean"),
                                   _p(block, "running_var"), block._kwargs["eps"])


def _ref_layer(layer, x):
    """Evaluate one Gluon layer with the NumPy reference."""
    if isinstance(layer, nn.Conv2D):
        kw = layer._kwargs
        b = _p(layer, "bias") if not kw["no_bias"] else None
        return ref.conv2d(x, _p(layer, "weight"), b, kw["stride"][0], kw["pad"][0], kw["num_group"])
    if isinstance(layer, nn.BatchNorm):
        return _bn(layer, x)
    if isinstance(layer, ChannelPReLU):
        return ref.prelu(x, _p(layer, "alpha"))
    if isinstance(layer, nn.MaxPool2D):
        kw = layer._kwargs
        return ref.max_pool2d(x, kw["kernel"][0], kw["stride"][0], kw["pad"][0])
    if isinstance(layer, nn.AvgPool2D):
        return ref.avg_pool2d(x, layer._kwargs["kernel"][0])
    if isinstance(layer, nn.Dense):
        return ref.dense(x, _p(layer, "weight"), _p(layer, "bias"))
    if isinstance(layer, nn.Flatten):
        return x.reshape(len(x), -1)
    raise TypeError(type(layer))


def test_tiny_cnn_matches_reference_layer_by_layer():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(6, 3, strides=1, padding=1, in_channels=3),
            nn.BatchNorm(epsilon=2e-5, in_channels=6),
            ChannelPReLU(6),
            nn.MaxPool2D(3, 2, 1),
            nn.Conv2D(6, 3, strides=2, padding=1, groups=3, use_bias=False, in_channels=6),
            nn.AvgPool2D(2),
            nn.Dense(5, in_units=6 * 2 * 2))
    net.initialize()
    net.cast("float64")
    _randomise(net)
    x = RNG.normal(size=(2, 3, 15, 15))
    y_ref, y = x, mx.nd.array(x, dtype="float64")
    for layer in net:
        y = layer(y)
        y_ref = _ref_layer(layer, y_ref)
        assert y.shape == y_ref.shape, type(layer)
        np.testing.assert_allclose(y.asnumpy(), y_ref, rtol=1e-10, atol=1e-10, err_msg=str(type(layer)))
    net.hybridize()
    np.testing.assert_allclose(net(mx.nd.array(x, dtype="float64")).asnumpy(), y_ref, rtol=1e-10, atol=1e-10)


def test_channel_prelu_gradients_match_finite_differences():
    act = ChannelPReLU(3)
    act.initialize()
    act.cast("float64")
    act.alpha.set_data(mx.nd.array([0.1, 0.25, 0.7], dtype="float64").reshape((3, 1, 1, 1)))
    x = RNG.normal(size=(2, 3, 4, 4))
    g = RNG.normal(size=x.shape)
    xn = mx.nd.array(x, dtype="float64")
    xn.attach_grad()
    with mx.autograd.record():
        out = (act(xn) * mx.nd.array(g, dtype="float64")).sum()
    out.backward()
    alpha = act.alpha.data().asnumpy().ravel()
    num_x = ref.numeric_grad(lambda v: (ref.prelu(v, alpha) * g).sum(), x.copy())
    num_a = ref.numeric_grad(lambda a: (ref.prelu(x, a) * g).sum(), alpha.copy())
    np.testing.assert_allclose(xn.grad.asnumpy(), num_x, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(act.alpha.grad().asnumpy().ravel(), num_a, rtol=1e-6, atol=1e-8)


def _ref_block(block, x):
    """NumPy evaluation of gluonface's composite blocks by recursion over their children."""
    if isinstance(block, IRUnit):
        short = x if block.shortcut is None else _ref_block(block.shortcut, x)
        return _ref_block(block.body, x) + short
    if isinstance(block, Bottleneck):
        return _ref_block(block.body, x) + (x if block.residual else 0)
    if isinstance(block, EmbeddingHead):
        y = _bn(block.bn_in, x)
        y = ref.dense(y, _p(block.fc, "weight"), _p(block.fc, "bias"))
        # bn_out has scale=False: gamma is fixed at 1 whatever its stored value
        bn = block.bn_out
        return ref.batchnorm_inference(y, np.ones(y.shape[1]), _p(bn, "beta"), _p(bn, "running_mean"),
                                       _p(bn, "running_var"), bn._kwargs["eps"])
    if isinstance(block, nn.HybridSequential):
        for child in block:
            x = _ref_block(child, x)
        return x
    return _ref_layer(block, x)


@pytest.mark.parametrize("name,size", [("iresnet_tiny", 56),
                                       # the global depthwise conv is 4x4; its BatchNorm runs on (N, 512)
                                       ("mobilefacenet", 64)])
def test_network_matches_reference_end_to_end(name, size):
    net = get_model(name, embedding_size=16, input_size=size)
    net.initialize()
    net(mx.nd.zeros((1, 3, size, size)))  # finish deferred shape inference
    net.cast("float64")
    _randomise(net)
    x = RNG.uniform(0, 255, size=(2, 3, size, size))
    want = _ref_block(net.output, _ref_block(net.features, (x - 127.5) / 128.0))
    got = net(mx.nd.array(x, dtype="float64")).asnumpy()
    assert got.shape == (2, 16)
    # float64 throughout: agreement to ~1e-9 of the output's magnitude (round-off of ~1e3 terms per output)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
