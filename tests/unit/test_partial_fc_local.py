"""PartialFCHorovod in one process (LocalComm, W = 1) against the independent NumPy full softmax."""
import os
import sys
import types

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "distributed"))

import partial_fc_reference as ref  # noqa: E402

from gluonface.errors import GluonFaceError  # noqa: E402
from gluonface.losses.partial_fc import build_partial_fc  # noqa: E402
from gluonface.losses.partial_fc.horovod import PartialFCHorovod  # noqa: E402

MARGINS = [(16.0, 1.0, 0.5, 0.0), (16.0, 1.0, 0.0, 0.4), (30.0, 1.0, 0.3, 0.2)]


def _loss_cfg(**kw):
    base = dict(s=64.0, m1=1.0, m2=0.5, m3=0.0, easy_margin=False, sub_centers=1, sample_rate=1.0)
    base.update(kw)
    return types.SimpleNamespace(**base)


@pytest.mark.parametrize("margin", MARGINS)
def test_exact_loss_and_gradients(margin):
    rng = np.random.default_rng(1)
    blk = PartialFCHorovod(12, 8, s=margin[0], m1=margin[1], m2=margin[2], m3=margin[3])
    W = rng.normal(size=(12, 8)).astype(np.float32)
    blk.assign_full_matrix(W)
    X = rng.normal(size=(6, 8)).astype(np.float32)
    y = rng.integers(0, 12, size=6)
    x = nd.array(X)
    x.attach_grad()
    with autograd.record():
        loss = blk(x, nd.array(y))
    loss.backward()
    want, dX, dW = ref.loss_and_grads(X, W, y, *margin)
    np.testing.assert_allclose(loss.asnumpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x.grad.asnumpy(), dX, atol=2e-5)
    np.testing.assert_allclose(blk.weight.grad().asnumpy(), dW, atol=2e-5)


def test_sampled_softmax_over_the_chosen_rows():
    rng = np.random.default_rng(2)
    blk = PartialFCHorovod(50, 4, sample_rate=0.2, s=10.0, m1=1.0, m2=0.0, m3=0.3)
    W = rng.normal(size=(50, 4)).astype(np.float32)
    blk.assign_full_matrix(W)
    X = rng.normal(size=(5, 4)).astype(np.float32)
    y = np.array([3, 3, 40, 17, 22])
    with autograd.record():
        loss = blk(nd.array(X), nd.array(y))
    rows = blk.last_rows
    assert rows.size == 10 and set(y.tolist()) <= set(rows.tolist())
    remap = np.searchsorted(rows, y)
    want, _, dW = ref.loss_and_grads(X, W[rows], remap, 10.0, 1.0, 0.0, 0.3)
    np.testing.assert_allclose(loss.asnumpy(), want, rtol=1e-4, atol=1e-5)
    loss.backward()
    grad = blk.weight.grad().asnumpy()
    np.testing.assert_allclose(grad[rows], dW, atol=2e-5)
    unused = np.setdiff1d(np.arange(50), rows)
    assert np.all(grad[unused] == 0)


def test_checkpoint_round_trip_restores_centres_counter_and_momentum(tmp_path):
    cfg = _loss_cfg(s=10.0, sample_rate=0.5)
    ctx = types.SimpleNamespace(engine="local", rank=0, num_workers=1, ctx=[mx.cpu()])
    blk = build_partial_fc(cfg, 30, 4, ctx, seed=1)
    trainer = blk.make_trainer("sgd", {"learning_rate": 0.5, "momentum": 0.9})
    x, y = nd.array(np.random.default_rng(0).normal(size=(4, 4))), nd.array([1, 2, 3, 4])
    for _ in range(2):
        with autograd.record():
            loss = blk(x, y)
        loss.backward()
        trainer.step(4)
    blk.save_checkpoint(str(tmp_path), trainer)
    assert sorted(os.listdir(tmp_path)) == ["classifier-rank0.params", "trainer-classifier-rank0.states"]
    other = build_partial_fc(cfg, 30, 4, ctx, seed=1)
    other_trainer = other.make_trainer("sgd", {"learning_rate": 0.5, "momentum": 0.9})
    other.load_checkpoint(str(tmp_path), other_trainer)
    for b, t in ((blk, trainer), (other, other_trainer)):
        with autograd.record():
            loss = b(x, y)
        loss.backward()
        t.step(4)
    np.testing.assert_array_equal(blk.last_rows, other.last_rows)
    np.testing.assert_array_equal(blk.weight.data().asnumpy(), other.weight.data().asnumpy())


def test_factory_rejects_what_it_cannot_do():
    ctx = types.SimpleNamespace(engine="local", rank=0, num_workers=1, ctx=[mx.cpu()])
    with pytest.raises(GluonFaceError, match="sub_centers"):
        build_partial_fc(_loss_cfg(sub_centers=3), 10, 4, ctx)
    two = types.SimpleNamespace(engine="local", rank=0, num_workers=1, ctx=[mx.cpu(0), mx.cpu(1)])
    with pytest.raises(GluonFaceError, match="one device"):
        build_partial_fc(_loss_cfg(), 10, 4, two)


def test_glint360k_config_builds_a_sampled_partial_fc():
    from gluonface.config import load_config
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
    cfg = load_config(os.path.join(root, "configs", "glint360k_r100_cosface_pfc.yaml"))
    assert cfg.loss.partial_fc and cfg.dist.engine == "horovod" and not cfg.dist.update_on_kvstore
    ctx = types.SimpleNamespace(engine="local", rank=0, num_workers=1, ctx=[mx.cpu()])
    blk = build_partial_fc(cfg.loss, 1000, 16, ctx)
    assert blk.num_sample == 200 and blk.margin == (64.0, 1.0, 0.0, 0.4, False)
