"""The AdamW optimizer against an independent NumPy implementation of the update."""
import numpy as np
import mxnet as mx
from mxnet import gluon

import gluonface.engine.adamw  # noqa: F401


def numpy_adamw(w, grads, lr, wd, b1, b2, eps, rescale):
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g * rescale
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        c = np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - lr * (c * m / (np.sqrt(v) + eps) + wd * w)
    return w


def test_adamw_matches_numpy():
    rs = np.random.RandomState(0)
    w0 = rs.randn(5, 3).astype(np.float32)
    grads = [rs.randn(5, 3).astype(np.float32) for _ in range(4)]
    p = gluon.Parameter("w", shape=w0.shape)
    p.initialize(ctx=mx.cpu())
    p.set_data(mx.nd.array(w0))
    tr = gluon.Trainer([p], "adamw", {"learning_rate": 0.01, "wd": 0.1, "beta1": 0.8, "beta2": 0.95,
                                      "epsilon": 1e-6})
    for g in grads:
        with mx.autograd.record():
            loss = (p.data() * mx.nd.array(g)).sum()   # d loss / d w = g
        loss.backward()
        tr.step(2)
    want = numpy_adamw(w0.astype(np.float64), grads, 0.01, 0.1, 0.8, 0.95, 1e-6, 0.5)
    np.testing.assert_allclose(p.data().asnumpy(), want, rtol=2e-5, atol=1e-6)
