"""Local engine: device parsing, engine resolution from config + environment, trainer numerics."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from gluonface.config import DistConfig
from gluonface.parallel import collectives, init_dist, make_trainer, parse_devices
from gluonface.parallel.context import resolve_engine
from gluonface.parallel.kvstore_trainer import OffsetStore
from gluonface.errors import GluonFaceError


def test_parse_devices():
    assert parse_devices("cpu") == [mx.cpu(0)]
    assert parse_devices("cpu:2") == [mx.cpu(0), mx.cpu(1)]
    assert parse_devices([0, 1]) == [mx.gpu(0), mx.gpu(1)]
    assert parse_devices("gpu:0,3", local_rank=1, one_per_process=True) == [mx.gpu(3)]
    for bad in ("tpu", "cpu:x", "cpu:0"):
        with pytest.raises(GluonFaceError):
            parse_devices(bad)
    with pytest.raises(GluonFaceError, match="one device per process"):
        parse_devices("cpu:2", one_per_process=True)


@pytest.mark.parametrize("cfg,env,expected", [
    (DistConfig(), {}, ("local", "device")),
    (DistConfig(), {"DMLC_ROLE": "worker", "DMLC_PS_ROOT_URI": "127.0.0.1"}, ("kvstore", "dist_sync")),
    (DistConfig(engine="kvstore", kvstore="dist_async"), {"DMLC_ROLE": "worker"}, ("kvstore", "dist_async")),
    (DistConfig(), {"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2"}, ("horovod", None)),
    (DistConfig(engine="horovod"), {}, ("horovod", None)),
])
def test_resolve_engine(cfg, env, expected):
    assert resolve_engine(cfg, env) == expected


@pytest.mark.parametrize("cfg,env,match", [
    (DistConfig(engine="kvstore", kvstore="dist_sync"), {}, "gluonface launch"),
    (DistConfig(kvstore="dist_sync"), {}, "needs dist.engine=kvstore"),
    (DistConfig(engine="kvstore"), {"HOROVOD_RANK": "0"}, "horovod launcher"),
])
def test_resolve_engine_errors(cfg, env, match):
    with pytest.raises(GluonFaceError, match=match):
        resolve_engine(cfg, env)


def test_horovod_kvstore_name_refused():
    # mx.kv.create('horovod') in 1.9.1 is a silent single-process local store
    kv = mx.kv.create("horovod")
    assert kv.num_workers == 1
    cfg = DistConfig.__new__(DistConfig)
    object.__setattr__(cfg, "engine", "kvstore")
    object.__setattr__(cfg, "kvstore", "horovod")
    with pytest.raises(GluonFaceError, match="silently"):
        resolve_engine(cfg, {"DMLC_ROLE": "worker"})


def test_compression_only_where_it_works(monkeypatch):
    for key in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "HOROVOD_RANK", "HOROVOD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(GluonFaceError, match="fp16 needs dist.engine=horovod"):
        init_dist(DistConfig(compression="fp16"), "cpu")


def _net(ctx):
    net = gluon.nn.Dense(3, in_units=4)
    net.initialize(mx.init.Uniform(0.5), ctx=ctx)
    return net


def test_local_two_contexts_apply_global_mean_gradient(monkeypatch):
    for key in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "HOROVOD_RANK", "HOROVOD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    dctx = init_dist(DistConfig(), "cpu:2")
    assert (dctx.engine, dctx.num_workers, dctx.kvstore, dctx.is_main) == ("local", 1, "device", True)
    net = _net(dctx.ctx)
    w0 = net.weight.data(dctx.ctx[0]).asnumpy().astype(np.float64)
    b0 = net.bias.data(dctx.ctx[0]).asnumpy().astype(np.float64)
    rng = np.random.RandomState(0)
    x = rng.randn(6, 4).astype(np.float32)
    t = rng.randn(6, 3).astype(np.float32)
    trainer = make_trainer(net.collect_params(), "sgd", dctx, optimizer_params={"learning_rate": 0.1})
    with autograd.record():
        losses = [((net(mx.nd.array(xs, ctx=c)) - mx.nd.array(ts, ctx=c)) ** 2).sum(axis=1)
                  for xs, ts, c in zip(np.split(x, 2), np.split(t, 2), dctx.ctx)]
    autograd.backward(losses)
    trainer.step(6)
    # NumPy reference: loss_i = |W x_i + b - t_i|^2, mean gradient over the 6 samples
    err = x @ w0.T + b0 - t
    gw = 2 * err.T @ x / 6
    gb = 2 * err.sum(0) / 6
    for c in dctx.ctx:
        np.testing.assert_allclose(net.weight.data(c).asnumpy(), w0 - 0.1 * gw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(net.bias.data(c).asnumpy(), b0 - 0.1 * gb, rtol=1e-5, atol=1e-6)
    trainer.set_learning_rate(0.05)
    assert trainer.learning_rate == 0.05


def test_sharded_trainer_never_reduces(monkeypatch):
    for key in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "HOROVOD_RANK", "HOROVOD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    dctx = init_dist(DistConfig(), "cpu:2")
    trainer = make_trainer(_net(dctx.ctx).collect_params(), "sgd", dctx, sharded=True)
    trainer._init_kvstore()
    assert trainer._kvstore is None


def test_local_save_load_states(tmp_path, monkeypatch):
    for key in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "HOROVOD_RANK", "HOROVOD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    dctx = init_dist(DistConfig(), "cpu")
    net = _net(dctx.ctx)
    trainer = make_trainer(net.collect_params(), "sgd", dctx,
                           optimizer_params={"learning_rate": 0.1, "momentum": 0.9})
    with autograd.record():
        loss = net(mx.nd.ones((2, 4))).sum()
    loss.backward()
    trainer.step(2)
    trainer.save_states(str(tmp_path / "t.states"))
    other = make_trainer(net.collect_params(), "sgd", dctx,
                         optimizer_params={"learning_rate": 0.7, "momentum": 0.9})
    other.load_states(str(tmp_path / "t.states"))
    assert other.learning_rate == pytest.approx(0.1)
    mom = other._updaters[0].states
    assert set(mom) == {0, 1} and float(mom[0].abs().sum().asscalar()) > 0


def test_allreduce_mean_single_worker(monkeypatch):
    for key in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "HOROVOD_RANK", "HOROVOD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    dctx = init_dist(DistConfig(), "cpu")
    assert collectives.allreduce_mean(2.5, dctx) == 2.5
    arr = mx.nd.array([1.0, 2.0])
    out = collectives.allreduce_mean(arr, dctx)
    np.testing.assert_array_equal(out.asnumpy(), [1.0, 2.0])
    collectives.barrier(dctx)


def test_offset_store_shifts_keys():
    base = mx.kv.create("local")
    a, b = OffsetStore(base, 0), OffsetStore(base, 10)
    a.init(3, mx.nd.ones((2,)))
    b.init(3, mx.nd.ones((2,)) * 7)
    out = mx.nd.zeros((2,))
    base.pull(13, out=out)
    np.testing.assert_array_equal(out.asnumpy(), [7, 7])
    base.pull(3, out=out)
    np.testing.assert_array_equal(out.asnumpy(), [1, 1])
