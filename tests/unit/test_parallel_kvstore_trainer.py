"""KVStoreTrainer's single-process behaviour on a local store (the multi-process facts are in tests/distributed).

A local kvstore can run the optimizer itself like a server does, so the update_on_kvstore rules (fixed
batch, no LR change, no resumable states) and the sum-to-mean rescaling are checked here without ps-lite.
"""
import types

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from gluonface.parallel.context import DistContext, KVHandle
from gluonface.parallel.kvstore_trainer import KVStoreTrainer
from gluonface.parallel.preflight import check_optimizer_pickles
from gluonface.errors import GluonFaceError


def _ctx(num_workers, on_servers):
    # rank 1: only rank 0 runs the (slow, fresh-interpreter) pickle pre-flight, tested on its own below
    return DistContext("kvstore", 1, num_workers, 0, [mx.cpu()], "dist_sync", on_servers, "none",
                       KVHandle(mx.kv.create("local")))


def _net():
    net = gluon.nn.Dense(2, in_units=3)
    net.initialize(mx.init.Constant(0.5))
    return net


def _step(net, trainer, batch):
    x = mx.nd.ones((batch, 3))
    with autograd.record():
        loss = net(x).sum()
    loss.backward()
    trainer.step(batch)


@pytest.mark.parametrize("on_servers", [False, True])
def test_scale_divides_the_worker_sum(on_servers):
    # one process standing for a 4-worker job: the servers' sum would be 4x this gradient, so the trainer's
    # step must be a quarter of the plain mean-gradient step
    net = _net()
    trainer = KVStoreTrainer(list(net.collect_params().values()), "sgd", {"learning_rate": 1.0},
                             dist_ctx=_ctx(4, on_servers), batch_size=2)
    _step(net, trainer, 2)
    # d(sum of outputs)/dW = batch * x = 2 per entry; mean over the batch = 1; / 4 workers = 0.25
    np.testing.assert_allclose(net.weight.data().asnumpy(), 0.5 - 0.25, rtol=1e-6)
    np.testing.assert_allclose(net.bias.data().asnumpy(), 0.0 - 0.25, rtol=1e-6)   # bias starts at 0


def test_server_side_optimizer_rules(tmp_path):
    net = _net()
    trainer = KVStoreTrainer(list(net.collect_params().values()), "sgd", {"learning_rate": 0.1},
                             dist_ctx=_ctx(1, True), batch_size=2)
    trainer.set_learning_rate(0.1)   # unchanged: fine
    with pytest.raises(GluonFaceError, match="15919"):
        trainer.set_learning_rate(0.01)
    with pytest.raises(GluonFaceError, match="batch size"):
        _step(net, trainer, 3)
    path = str(tmp_path / "t.states")
    trainer.save_states(path)
    with pytest.raises(GluonFaceError, match="cannot resume"):
        trainer.load_states(path)


def test_one_server_side_optimizer_per_store():
    dctx = _ctx(1, True)
    KVStoreTrainer(list(_net().collect_params().values()), "sgd", {}, dist_ctx=dctx, batch_size=1)
    with pytest.raises(GluonFaceError, match="only one trainer"):
        KVStoreTrainer(list(_net().collect_params().values()), "sgd", {}, dist_ctx=dctx, batch_size=1)


def test_trainers_get_separate_key_ranges():
    dctx = _ctx(1, False)
    a, b = _net(), _net()
    b.weight.set_data(mx.nd.ones((2, 3)) * 3)
    ta = KVStoreTrainer(list(a.collect_params().values()), "sgd", {}, dist_ctx=dctx)
    tb = KVStoreTrainer(list(b.collect_params().values()), "sgd", {}, dist_ctx=dctx)
    out = mx.nd.zeros((2, 3))
    dctx.handle.store.pull(0, out=out)     # key 0: a's weight (list order: weight, bias)
    np.testing.assert_allclose(out.asnumpy(), 0.5)
    dctx.handle.store.pull(2, out=out)     # key 2: b's weight
    np.testing.assert_allclose(out.asnumpy(), 3.0)
    assert (ta._kvstore._offset, tb._kvstore._offset) == (0, 2)


@pytest.mark.slow   # two fresh interpreters importing MXNet (seconds each, more on a loaded machine)
def test_optimizer_pickle_preflight():
    check_optimizer_pickles(mx.optimizer.create("sgd", learning_rate=0.1,
                                                lr_scheduler=mx.lr_scheduler.FactorScheduler(10)))
    # a scheduler class that only exists in the training script's __main__, as in the silent-garbage case
    main_mod = types.ModuleType("__main__")
    Sched = type("MySched", (mx.lr_scheduler.LRScheduler,), {"__call__": lambda self, n: 0.1,
                                                              "__module__": "__main__"})
    import sys
    real_main = sys.modules["__main__"]
    sys.modules["__main__"] = main_mod
    main_mod.MySched = Sched
    try:
        opt = mx.optimizer.create("sgd", learning_rate=0.1, lr_scheduler=Sched())
        with pytest.raises(GluonFaceError, match="MySched|unpickle"):
            check_optimizer_pickles(opt)
    finally:
        sys.modules["__main__"] = real_main
