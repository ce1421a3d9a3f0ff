"""PartialFCKVStore on a single-process 'local' kvstore (the updater runs in-process), and the servers'
optimizer on its own. The real 2-server job is tests/distributed/test_partial_fc_kvstore.py."""
import os
import pickle
import sys
import types

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "distributed"))

import partial_fc_reference as ref  # noqa: E402

from gluonface.parallel.context import KVHandle  # noqa: E402
from gluonface.errors import GluonFaceError  # noqa: E402
from gluonface.losses.partial_fc.kvstore import PartialFCKVStore  # noqa: E402
from gluonface.losses.partial_fc.server import PartialFCServerSGD  # noqa: E402
from gluonface.losses.partial_fc.shard import init_rows  # noqa: E402

OPT = {"learning_rate": 0.1, "momentum": 0.9, "wd": 5e-4}


def _block(num_classes=10, sample_rate=1.0, store=None, block_rows=None, **margin):
    handle = KVHandle(store or mx.kv.create("local"))
    ctx = types.SimpleNamespace(engine="kvstore", rank=0, num_workers=1, ctx=[mx.cpu()], handle=handle)
    margin = margin or {"s": 16.0, "m1": 1.0, "m2": 0.5, "m3": 0.0}
    return PartialFCKVStore(num_classes, 4, ctx, sample_rate=sample_rate, seed=2, block_rows=block_rows, **margin)


def _step(blk, trainer, x, y):
    x = nd.array(x)
    x.attach_grad()
    with autograd.record():
        loss = blk(x, nd.array(y))
    loss.backward()
    trainer.step(len(y))
    return loss.asnumpy(), x.grad.asnumpy()


@pytest.mark.parametrize("margin", [(16.0, 1.0, 0.5, 0.0), (16.0, 1.0, 0.0, 0.4)])
def test_full_softmax_and_server_update_match_numpy(margin):
    blk = _block(s=margin[0], m1=margin[1], m2=margin[2], m3=margin[3])
    trainer = blk.make_trainer("sgd", OPT, batch_size=3)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(3, 4)).astype(np.float32), np.array([1, 7, 7])
    W0 = init_rows(2, 0, 10, 4)
    loss, dx = _step(blk, trainer, X, y)
    want, dX, dW = ref.loss_and_grads(X, W0, y, *margin)
    np.testing.assert_allclose(loss, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, dX, rtol=5e-4, atol=5e-5)   # |dx| ~ 10: float32
    W, mom = W0.astype(np.float64), np.zeros((10, 4))
    ref.sgd_step(W, dW / 3, mom, 0.1, 0.9, 5e-4)
    np.testing.assert_allclose(blk.pull_rows(np.arange(10)).asnumpy(), W, rtol=2e-4, atol=2e-6)


def test_sampling_pulls_few_rows_and_leaves_the_others_untouched():
    blk = _block(num_classes=300, sample_rate=0.05, block_rows=64)      # 5 blocks
    trainer = blk.make_trainer("sgd", OPT, batch_size=2)
    _step(blk, trainer, np.ones((2, 4), np.float32), np.array([5, 250]))
    rows = blk.last_rows
    assert rows.size == 15 and {5, 250} <= set(rows.tolist()) and blk.pulled.shape == (15, 4)
    after = blk.pull_rows(np.arange(300)).asnumpy()
    untouched = np.setdiff1d(np.arange(300), rows)
    np.testing.assert_array_equal(after[untouched], init_rows(2, 0, 300, 4)[untouched])   # lazy: no wd
    assert not np.allclose(after[rows], init_rows(2, 0, 300, 4)[rows])


def test_checkpoint_resume_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    data = [(rng.normal(size=(2, 4)).astype(np.float32), rng.integers(0, 40, 2)) for _ in range(4)]
    straight = _block(num_classes=40, sample_rate=0.25, block_rows=16)
    t_straight = straight.make_trainer("sgd", OPT, batch_size=2)
    for x, y in data:
        _step(straight, t_straight, x, y)
    first = _block(num_classes=40, sample_rate=0.25, block_rows=16)
    t_first = first.make_trainer("sgd", OPT, batch_size=2)
    for x, y in data[:2]:
        _step(first, t_first, x, y)
    first.save_checkpoint(str(tmp_path), t_first)
    assert sorted(os.listdir(tmp_path)) == ["classifier-block00000.params", "classifier-block00001.params",
                                            "classifier-block00002.params", "classifier.json"]
    resumed = _block(num_classes=40, sample_rate=0.25, block_rows=16)
    t_resumed = resumed.make_trainer("sgd", OPT, batch_size=2)
    resumed.load_checkpoint(str(tmp_path), t_resumed)
    for x, y in data[2:]:
        _step(resumed, t_resumed, x, y)
    np.testing.assert_array_equal(resumed.pull_rows(np.arange(40)).asnumpy(),
                                  straight.pull_rows(np.arange(40)).asnumpy())
    assert t_resumed.num_update == t_straight.num_update == 4


def test_servers_without_the_optimizer_are_detected():
    store = mx.kv.create("local")
    store.set_optimizer = lambda optimizer: None      # what a server that failed to unpickle amounts to
    blk = _block(store=store)
    trainer = blk.make_trainer("sgd", OPT)
    with pytest.raises(GluonFaceError, match="not running the Partial FC optimizer"):
        _step(blk, trainer, np.ones((1, 4), np.float32), np.array([0]))


def test_user_errors_name_the_fix():
    blk = _block()
    with pytest.raises(GluonFaceError, match="optim.name=sgd"):
        blk.make_trainer("adamw", OPT)
    blk._handle.optimizer_owner = object()
    with pytest.raises(GluonFaceError, match="update_on_kvstore=false"):
        blk.make_trainer("sgd", OPT)
    blk._handle.optimizer_owner = None
    trainer = blk.make_trainer("sgd", OPT)              # batch size fixed by the first step
    _step(blk, trainer, np.ones((2, 4), np.float32), np.array([0, 1]))
    with pytest.raises(GluonFaceError, match="batch size"):
        _step(blk, trainer, np.ones((3, 4), np.float32), np.array([0, 1, 2]))


def test_server_optimizer_pickles_follows_its_schedule_and_sums_other_keys():
    sched = mx.lr_scheduler.FactorScheduler(step=1, factor=0.5, base_lr=0.4)
    opt = PartialFCServerSGD([7], [8], momentum=0.0, learning_rate=0.4, lr_scheduler=sched, begin_num_update=2)
    opt = pickle.loads(pickle.dumps(opt))             # what the servers receive
    weight, other = nd.ones((3, 2)), nd.zeros((2,))
    opt.update(8, nd.zeros((3, 2)), nd.zeros((3, 2)), None)            # bind the momentum rows
    grad = nd.sparse.row_sparse_array((nd.ones((1, 2)), nd.array([1], dtype="int64")), shape=(3, 2))
    opt.update(7, weight, grad, None)
    lr = sched(3)                                       # num_update continues from begin_num_update
    np.testing.assert_allclose(weight.asnumpy(), [[1, 1], [1 - lr, 1 - lr], [1, 1]], rtol=1e-6)
    opt.update(0, other, nd.array([2.0, 3.0]), None)
    np.testing.assert_array_equal(other.asnumpy(), [2.0, 3.0])


def test_worker_side_schedule_reaches_the_servers_step_by_step():
    from gluoncv.utils import LRScheduler, LRSequential
    sched = LRSequential([LRScheduler("linear", base_lr=0.0, target_lr=0.2, niters=2),
                          LRScheduler("cosine", base_lr=0.2, target_lr=0.0, niters=4)])
    blk = _block(num_classes=6, s=8.0, m1=1.0, m2=0.0, m3=0.2)
    trainer = blk.make_trainer("sgd", {"learning_rate": 0.2, "momentum": 0.5, "wd": 0.0, "lr_scheduler": sched})
    rng = np.random.default_rng(3)
    W, mom = init_rows(2, 0, 6, 4).astype(np.float64), np.zeros((6, 4))
    rates = []
    for t in range(1, 5):
        X, y = rng.normal(size=(2, 4)).astype(np.float32), rng.integers(0, 6, 2)
        _, _, dW = ref.loss_and_grads(X, W, y, 8.0, 1.0, 0.0, 0.2)
        rates.append(sched(t))
        ref.sgd_step(W, dW / 2, mom, rates[-1], 0.5, 0.0)
        _step(blk, trainer, X, y)
    assert len(set(rates)) == 3                      # warmup, then cosine decay: re-sent twice
    np.testing.assert_allclose(blk.pull_rows(np.arange(6)).asnumpy(), W, rtol=2e-4, atol=1e-5)
