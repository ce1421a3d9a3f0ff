"""The Gluon P/R/O-Nets with the wheel's weights against an independent NumPy forward pass in Keras layout."""
import mxnet as mx
import numpy as np
import pytest

from gluonface.align.nets import load_keras_arrays, load_mtcnn_nets


def np_conv(x, kernel, bias):
    """Valid conv, NHWC input, Keras kernel (kh, kw, in, out)."""
    kh, kw = kernel.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H', W', C, kh, kw)
    return np.einsum("nhwcij,ijco->nhwo", win, kernel) + bias


def np_prelu(x, alpha):
    return np.where(x > 0, x, x * alpha.reshape(-1))


def np_maxpool_same(x, k, s):
    """Keras 'same' max-pooling: output ceil(H/s), padding split before/after (after gets the extra)."""
    n, h, w, c = x.shape
    oh, ow = -(-h // s), -(-w // s)
    ph, pw = max((oh - 1) * s + k - h, 0), max((ow - 1) * s + k - w, 0)
    pad = np.full((n, h + ph, w + pw, c), -np.inf)
    pad[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w] = x
    return np_maxpool_valid(pad, k, s)


def np_maxpool_valid(x, k, s):
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]
    return win.max(axis=(4, 5))


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_pnet(x, w):
    x = np_maxpool_same(np_prelu(np_conv(x, w[0], w[1]), w[2]), 2, 2)
    x = np_prelu(np_conv(x, w[3], w[4]), w[5])
    x = np_prelu(np_conv(x, w[6], w[7]), w[8])
    return np_conv(x, w[9], w[10]), np_softmax(np_conv(x, w[11], w[12]))


def np_head(x, w):
    """Keras Permute((2, 1, 3)) + Flatten on NHWC."""
    return x.transpose(0, 2, 1, 3).reshape(len(x), -1)


def np_rnet(x, w):
    x = np_maxpool_same(np_prelu(np_conv(x, w[0], w[1]), w[2]), 3, 2)
    x = np_maxpool_valid(np_prelu(np_conv(x, w[3], w[4]), w[5]), 3, 2)
    x = np_prelu(np_conv(x, w[6], w[7]), w[8])
    x = np_prelu(np_head(x, w) @ w[9] + w[10], w[11])
    return x @ w[12] + w[13], np_softmax(x @ w[14] + w[15])


def np_onet(x, w):
    x = np_maxpool_same(np_prelu(np_conv(x, w[0], w[1]), w[2]), 3, 2)
    x = np_maxpool_valid(np_prelu(np_conv(x, w[3], w[4]), w[5]), 3, 2)
    x = np_maxpool_same(np_prelu(np_conv(x, w[6], w[7]), w[8]), 2, 2)
    x = np_prelu(np_conv(x, w[9], w[10]), w[11])
    x = np_prelu(np_head(x, w) @ w[12] + w[13], w[14])
    return x @ w[15] + w[16], x @ w[17] + w[18], np_softmax(x @ w[19] + w[20])


@pytest.fixture(scope="module")
def nets():
    return load_mtcnn_nets(mx.cpu())


def test_nets_are_hybridized(nets):
    for net in nets:
        assert net._active, f"{type(net).__name__} is not hybridized"


@pytest.mark.parametrize("hw", [(12, 12), (31, 23)])
def test_pnet_matches_numpy(nets, hw):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, *hw, 3)).astype(np.float32)
    reg, prob = [o.asnumpy() for o in nets[0](mx.nd.array(x.transpose(0, 3, 1, 2)))]
    ref_reg, ref_prob = np_pnet(x.astype(np.float64), load_keras_arrays("pnet"))
    np.testing.assert_allclose(reg, ref_reg.transpose(0, 3, 1, 2), atol=2e-4)
    np.testing.assert_allclose(prob, ref_prob.transpose(0, 3, 1, 2), atol=2e-4)


def test_rnet_matches_numpy(nets):
    x = np.random.default_rng(1).uniform(-1, 1, (3, 24, 24, 3)).astype(np.float32)
    out = [o.asnumpy() for o in nets[1](mx.nd.array(x.transpose(0, 3, 1, 2)))]
    for got, ref in zip(out, np_rnet(x.astype(np.float64), load_keras_arrays("rnet"))):
        np.testing.assert_allclose(got, ref, atol=2e-4)


def test_onet_matches_numpy(nets):
    x = np.random.default_rng(2).uniform(-1, 1, (3, 48, 48, 3)).astype(np.float32)
    out = [o.asnumpy() for o in nets[2](mx.nd.array(x.transpose(0, 3, 1, 2)))]
    for got, ref in zip(out, np_onet(x.astype(np.float64), load_keras_arrays("onet"))):
        np.testing.assert_allclose(got, ref, atol=2e-4)
