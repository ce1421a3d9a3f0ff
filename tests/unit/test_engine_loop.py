"""The step loop with a fake loader (tests only): epochs, resume offsets, hook order, logs and curves."""
import json
import os
import types

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from gluonface.parallel import DistContext
from gluonface.engine.hooks import LogHook
from gluonface.engine.loop import Hook, TrainLoop
from gluonface.engine.runlog import RunLogger, plot_curves, read_metrics
from gluonface.engine.schedule import Schedule
from gluonface.errors import GluonFaceError

LOCAL = DistContext(engine="local", ctx=[mx.cpu()])


class FakeLoader:
    """Deterministic batches; records which epochs and offsets the loop asked for."""

    def __init__(self, steps_per_epoch, batch=4, short_epoch=None):
        self.steps_per_epoch, self.batch, self.short_epoch = steps_per_epoch, batch, short_epoch
        self.calls = []
        self.epoch = 0

    def set_epoch(self, e):
        self.epoch = e

    def iter_from(self, step):
        self.calls.append((self.epoch, step))
        end = self.steps_per_epoch - (1 if self.epoch == self.short_epoch else 0)
        for s in range(step, end):
            rs = np.random.RandomState(self.epoch * 1000 + s)
            yield rs.rand(self.batch, 3).astype(np.float32), rs.randint(0, 5, self.batch).astype(np.float32)


class Recorder(Hook):
    name = "rec"

    def __init__(self):
        self.events = []

    def before_train(self, loop):
        self.events.append(("before", loop.step))

    def after_step(self, loop):
        self.events.append(("step", loop.step, loop.epoch, loop.epoch_end))

    def after_train(self, loop):
        self.events.append(("after", loop.step))


class SoftmaxLoss(gluon.HybridBlock):
    def __init__(self):
        super().__init__()
        self.fc = gluon.nn.Dense(5, in_units=4)
        self.ce = gluon.loss.SoftmaxCrossEntropyLoss()

    def hybrid_forward(self, F, emb, label):
        return self.ce(self.fc(emb), label)


def make_loop(loader, hooks, spe):
    net = gluon.nn.Dense(4, in_units=3)
    loss = SoftmaxLoss()
    net.initialize(ctx=mx.cpu())
    loss.initialize(ctx=mx.cpu())
    trainers = {"backbone": gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}),
                "classifier": gluon.Trainer(loss.collect_params(), "sgd", {"learning_rate": 0.1})}
    sched = Schedule(num_images=spe * 4, num_devices=1, num_workers=1, batch_per_worker=4, global_batch=4,
                     steps_per_epoch=spe, total_steps=100, stop_step=100, lr=0.1, warmup_steps=0, decay_steps=())
    return TrainLoop(net, loss, trainers, loader, LOCAL, sched, hooks)


def test_epochs_offsets_and_hook_order():
    loader, rec = FakeLoader(3), Recorder()
    loop = make_loop(loader, [rec], 3)
    loop.run(start_step=4, stop_step=8)          # resume mid-epoch 1 (offset 1), stop mid-epoch 2
    assert loader.calls == [(1, 1), (2, 0)]
    assert rec.events == [("before", 4), ("step", 5, 1, False), ("step", 6, 1, True), ("step", 7, 2, False),
                          ("step", 8, 2, False), ("after", 8)]


def test_consecutive_runs_continue_the_same_batches():
    """run(0, 2) then run(2, 5) asks the loader once per epoch, like run(0, 5): the batches the loader
    prepared for step 2 are used, not discarded. After the loader was closed, a fresh iteration starts."""
    loader = FakeLoader(4)
    straight = make_loop(loader, [], 4)
    straight.run(0, 6)
    assert loader.calls == [(0, 0), (1, 0)]
    loader = FakeLoader(4)
    loader.generation = 0
    loop = make_loop(loader, [], 4)
    loop.run(0, 2)
    loop.run(2, 5)
    assert loader.calls == [(0, 0), (1, 0)]
    loop.run(5, 6)                               # continues inside epoch 1
    assert loader.calls == [(0, 0), (1, 0)]
    loader.generation += 1                       # e.g. the loader was closed in between
    loop.run(6, 7)
    assert loader.calls == [(0, 0), (1, 0), (1, 2)]
    loop.run(3, 4)                               # not where the previous run stopped: a fresh iteration
    assert loader.calls[-1] == (0, 3)


def test_short_loader_is_an_error():
    loop = make_loop(FakeLoader(3, short_epoch=0), [], 3)
    with pytest.raises(GluonFaceError, match="stopped early"):
        loop.run(0, 6)


def test_loader_schedule_mismatch_is_an_error():
    with pytest.raises(GluonFaceError, match="steps per epoch"):
        make_loop(FakeLoader(3), [], 4)


def test_log_hook_metrics_and_curves(tmp_path):
    logger = RunLogger(str(tmp_path), tensorboard=True)
    loop = make_loop(FakeLoader(5), [LogHook(logger, every=2, progress_bar=False, dist_ctx=LOCAL)], 5)
    loop.run(0, 5)
    logger.record("verify", 5, {"set": "lfw", "accuracy": 0.9, "accuracy_std": 0.01, "threshold": 0.3})
    logger.close()
    rows = read_metrics(str(tmp_path / "metrics.jsonl"))
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 5]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 and r["lr"] == pytest.approx(0.1) and r["img_per_s"] > 0
               for r in train)
    log = (tmp_path / "train.log").read_text()
    assert "step 4/5" in log and "loss" in log and "img/s" in log and "eta" in log
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 6, "lo')    # torn line of a killed run
    assert len(read_metrics(str(tmp_path / "metrics.jsonl"))) == len(rows)
    out = plot_curves(str(tmp_path / "metrics.jsonl"), str(tmp_path / "curves.png"))
    assert out and (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_logged_loss_is_the_window_mean(tmp_path):
    """The loss logged at step k is the mean per-sample loss over the steps since the previous log line."""
    logger = RunLogger(str(tmp_path), tensorboard=False)
    seen = []

    class Spy(Hook):
        def after_step(self, loop):
            seen.append(np.concatenate([l.asnumpy() for l in loop.last_losses]).mean())
    loop = make_loop(FakeLoader(4), [Spy(), LogHook(logger, every=2, progress_bar=False, dist_ctx=LOCAL)], 4)
    loop.run(0, 4)
    logger.close()
    train = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if r["kind"] == "train"]
    assert train[0]["loss"] == pytest.approx(np.mean(seen[:2]), rel=1e-5)
    assert train[1]["loss"] == pytest.approx(np.mean(seen[2:]), rel=1e-5)


def test_resumed_logger_drops_records_after_the_checkpoint(tmp_path):
    logger = RunLogger(str(tmp_path), tensorboard=False)
    for step in (10, 20, 30):
        logger.record("train", step, {"loss": 1.0, "lr": 0.1})
    logger.close()
    logger = RunLogger(str(tmp_path), tensorboard=False, resume_step=20)   # killed after 30, resumed from 20
    logger.record("train", 30, {"loss": 0.5, "lr": 0.1})
    logger.close()
    rows = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [(r["step"], r["loss"]) for r in rows] == [(10, 1.0), (20, 1.0), (30, 0.5)]
    RunLogger(str(tmp_path), tensorboard=False).close()                     # a fresh run starts empty
    assert read_metrics(str(tmp_path / "metrics.jsonl")) == []


def test_batches_become_ndarrays_without_a_copy_and_views_are_copied_first():
    import mxnet as mx
    import numpy as np

    from gluonface.engine.loop import as_ndarray
    owned = np.arange(24, dtype=np.float32).reshape(2, 3, 4).copy()
    nd = as_ndarray(owned)
    assert not owned.flags["WRITEABLE"]                  # handed over: the caller may no longer write it
    np.testing.assert_array_equal(nd.asnumpy(), np.arange(24).reshape(2, 3, 4))
    base = np.zeros((4, 3), np.float32)
    view = base[:, 1]                                    # not contiguous, not owned: copied
    out = as_ndarray(view)
    base[:] = 7
    np.testing.assert_array_equal(out.asnumpy(), np.zeros(4))
    assert base.flags["WRITEABLE"]
    assert as_ndarray(nd) is nd
    assert as_ndarray(np.ones(3, np.float64)).dtype == np.float32
    assert isinstance(as_ndarray([1, 2]), mx.nd.NDArray)


class PoisonLoader:
    """A real TrainLoader (2 workers) that overwrites a buffer with NaN the moment it is given back."""

    def __init__(self, loader):
        self.loader, self.steps_per_epoch = loader, loader.steps_per_epoch
        self.given_back = 0

    def set_epoch(self, e):
        self.loader.set_epoch(e)

    def iter_from(self, step, lend=False):
        return self.loader.iter_from(step, lend=lend)

    def give_back(self, data):
        slot = self.loader._lent.get(data.__array_interface__["data"][0])
        if slot is not None:
            self.loader._slots[slot][0][...] = np.nan
            self.given_back += 1
        self.loader.give_back(data)


class CopyLoader(PoisonLoader):
    """The same loader without lending: every batch is a private copy."""

    give_back = property()   # hasattr(..., "give_back") is False

    def iter_from(self, step, lend=False):
        return self.loader.iter_from(step)


def test_lent_batches_are_given_back_only_after_their_last_reader(tmp_path):
    """With the loader's buffers lent to the loop (no copy) and poisoned as soon as they are given back,
    training gives bit-identical parameters to copied batches: nothing queued still read a returned buffer."""
    import cv2

    from gluonface.data.loader import TrainLoader
    from gluonface.data.record import FaceRecordDataset, RecordWriter
    rng = np.random.default_rng(0)
    w = RecordWriter(str(tmp_path / "train"))
    for i in range(60):
        w.add_image(cv2.imencode(".png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))[1].tobytes(), i // 12)
    w.close(image_size=(24, 24))
    ds = FaceRecordDataset(str(tmp_path / "train"))
    results = []
    for wrap in (PoisonLoader, CopyLoader):
        mx.random.seed(0)
        net = gluon.nn.HybridSequential()
        net.add(gluon.nn.Conv2D(16, 3, in_channels=3), gluon.nn.Activation("relu"),
                gluon.nn.Conv2D(16, 3, in_channels=16), gluon.nn.GlobalAvgPool2D(), gluon.nn.Dense(4, in_units=16))
        loss = SoftmaxLoss()
        net.initialize(mx.init.Xavier(), ctx=mx.cpu())
        loss.initialize(mx.init.Xavier(), ctx=mx.cpu())
        net.hybridize()
        trainers = {"backbone": gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01}),
                    "classifier": gluon.Trainer(loss.collect_params(), "sgd", {"learning_rate": 0.01})}
        loader = wrap(TrainLoader(ds, 6, seed=1, num_workers=2))
        sched = Schedule(num_images=60, num_devices=1, num_workers=1, batch_per_worker=6, global_batch=6,
                         steps_per_epoch=10, total_steps=25, stop_step=25, lr=0.01, warmup_steps=0, decay_steps=())
        loop = TrainLoop(net, loss, trainers, loader, LOCAL, sched, [])
        loop.run(0, 12)
        loop.run(12, 25)
        loader.loader.close()
        results.append(([v.data().asnumpy() for v in net.collect_params().values()], loader.given_back))
    (lent, n), (copied, _) = results
    assert n == 25          # every lent batch came back
    for a, b in zip(lent, copied):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
