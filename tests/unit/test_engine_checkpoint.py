"""Checkpoints: atomic publication, the `latest` pointer, pruning, interrupted writes, best/ and resume."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from gluonface.parallel import DistContext
from gluonface.engine import checkpoint as ck

LOCAL = DistContext(engine="local", ctx=[mx.cpu()])


def make_pair(seed=0):
    mx.random.seed(seed)
    net = gluon.nn.Dense(4, in_units=3)
    cls = gluon.nn.Dense(5, in_units=4, use_bias=False)
    net.initialize(mx.init.Xavier())
    cls.initialize(mx.init.Xavier())
    trainers = {"backbone": gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9}),
                "classifier": gluon.Trainer(cls.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})}
    return net, cls, trainers


def train_steps(net, cls, trainers, n, seed=1):
    rs = np.random.RandomState(seed)
    for _ in range(n):
        x = mx.nd.array(rs.rand(8, 3))
        with autograd.record():
            loss = cls(net(x)).sum()
        loss.backward()
        for t in trainers.values():
            t.step(8)


def params_np(block):
    """Parameter values in structural order (auto-generated names differ between instances)."""
    return [v.data().asnumpy() for v in block.collect_params().values()]


def save(run_dir, step, net, cls, trainers, keep=3):
    return ck.save_checkpoint(run_dir, step, backbone=net, classifier=cls, trainers=trainers,
                              state={"epoch": 0, "config_hash": "abc"}, rng={"seed": step}, dist_ctx=LOCAL,
                              keep=keep)


def test_save_publishes_complete_dir_and_latest(tmp_path):
    net, cls, tr = make_pair()
    train_steps(net, cls, tr, 2)
    path = save(str(tmp_path), 2, net, cls, tr)
    assert os.path.basename(path) == "step-00000002"
    assert sorted(os.listdir(path)) == ["backbone.params", "classifier.params", "rng-rank0.json", "state.json",
                                        "trainer-backbone.states", "trainer-classifier.states"]
    assert open(tmp_path / "checkpoints" / "latest").read().strip() == "step-00000002"
    assert ck.latest_checkpoint(str(tmp_path)) == path
    assert json.load(open(os.path.join(path, "state.json")))["step"] == 2
    assert not [f for f in os.listdir(path) if ".tmp" in f]


def test_resume_continues_bitwise(tmp_path):
    """Params + momentum + optimizer counters restored: 3 more steps match an uninterrupted run exactly."""
    net, cls, tr = make_pair()
    train_steps(net, cls, tr, 3, seed=1)
    save(str(tmp_path), 3, net, cls, tr)
    train_steps(net, cls, tr, 3, seed=2)
    straight = params_np(net), params_np(cls)

    net2, cls2, tr2 = make_pair(seed=99)      # different init: everything must come from the checkpoint
    state, rng = ck.load_checkpoint(ck.latest_checkpoint(str(tmp_path)), backbone=net2, classifier=cls2,
                                    trainers=tr2, dist_ctx=LOCAL, ctx=[mx.cpu()])
    assert state["step"] == 3 and rng == {"seed": 3}
    train_steps(net2, cls2, tr2, 3, seed=2)
    for a, b in zip(straight, (params_np(net2), params_np(cls2))):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert tr2["backbone"]._optimizer.num_update == tr["backbone"]._optimizer.num_update == 6


def test_keep_last_k(tmp_path):
    net, cls, tr = make_pair()
    for step in (1, 2, 3, 4, 5):
        save(str(tmp_path), step, net, cls, tr, keep=2)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step-00000004", "step-00000005"]


@pytest.mark.parametrize("victim", ["classifier", "trainer", "state"])
def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch, victim):
    net, cls, tr = make_pair()
    train_steps(net, cls, tr, 1)
    good = save(str(tmp_path), 1, net, cls, tr)
    before = params_np(net)
    train_steps(net, cls, tr, 1)

    def half_then_crash(path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"\x00" * 10)
        raise OSError("disk full")
    if victim == "classifier":
        monkeypatch.setattr(cls, "save_parameters", half_then_crash)
    elif victim == "trainer":
        monkeypatch.setattr(tr["backbone"], "save_states", half_then_crash)
    else:
        monkeypatch.setattr(ck, "atomic_write_text", lambda p, t: half_then_crash(p))
    with pytest.raises(OSError):
        save(str(tmp_path), 2, net, cls, tr)
    assert ck.latest_checkpoint(str(tmp_path)) == good
    net2, cls2, tr2 = make_pair(seed=5)
    ck.load_checkpoint(good, backbone=net2, classifier=cls2, trainers=tr2, dist_ctx=LOCAL, ctx=[mx.cpu()])
    for x, y in zip(params_np(net2), before):
        np.testing.assert_array_equal(x, y)
    monkeypatch.undo()
    assert os.path.basename(save(str(tmp_path), 2, net, cls, tr)) == "step-00000002"


def test_sigkill_during_write_leaves_previous_checkpoint(tmp_path):
    """A real process killed (SIGKILL) while its second checkpoint is being written."""
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_engine_checkpoint import make_pair, train_steps, save
        net, cls, tr = make_pair()
        train_steps(net, cls, tr, 1)
        save({str(tmp_path)!r}, 1, net, cls, tr)
        real = tr["backbone"].save_states
        def slow(path):
            real(path)
            open({str(tmp_path / 'writing')!r}, 'w').close()
            time.sleep(60)
        tr["backbone"].save_states = slow
        save({str(tmp_path)!r}, 2, net, cls, tr)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(3000):
            if (tmp_path / "writing").exists() or proc.poll() is not None:
                break
            import time
            time.sleep(0.01)
        assert (tmp_path / "writing").exists(), "child never reached the second write"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert os.path.isdir(tmp_path / "checkpoints" / "step-00000002.partial")
    assert ck.latest_checkpoint(str(tmp_path)).endswith("step-00000001")
    net, cls, tr = make_pair(seed=3)
    state, _ = ck.load_checkpoint(ck.latest_checkpoint(str(tmp_path)), backbone=net, classifier=cls,
                                  trainers=tr, dist_ctx=LOCAL, ctx=[mx.cpu()])
    assert state["step"] == 1
    # the next save of step 2 overwrites the debris and publishes
    train_steps(net, cls, tr, 1)
    save(str(tmp_path), 2, net, cls, tr)
    assert ck.latest_checkpoint(str(tmp_path)).endswith("step-00000002")


def test_published_dir_without_pointer_update_is_used(tmp_path):
    net, cls, tr = make_pair()
    save(str(tmp_path), 1, net, cls, tr)
    save(str(tmp_path), 2, net, cls, tr)
    (tmp_path / "checkpoints" / "latest").write_text("step-00000001\n")   # crash before the pointer moved
    assert ck.latest_checkpoint(str(tmp_path)).endswith("step-00000002")
    # re-saving a published step that `latest` does not name replaces it
    save(str(tmp_path), 2, net, cls, tr)
    assert ck.read_latest_name(str(tmp_path)) == "step-00000002"


def test_no_checkpoint(tmp_path):
    assert ck.latest_checkpoint(str(tmp_path)) is None
    from gluonface.errors import GluonFaceError
    with pytest.raises(GluonFaceError, match="no 'latest' checkpoint"):
        ck.checkpoint_path(str(tmp_path), "latest")


def test_sharded_classifier_files_per_rank(tmp_path):
    net, cls, tr = make_pair()
    calls = []
    ctx1 = DistContext(engine="horovod", rank=1, num_workers=2, ctx=[mx.cpu()])
    ctx0 = DistContext(engine="horovod", rank=0, num_workers=2, ctx=[mx.cpu()])
    # rank 1 writes its shard into staging and waits at the barrier; rank 0 then publishes.
    ck.save_checkpoint(str(tmp_path), 4, backbone=net, classifier=cls, trainers=tr, state={}, rng={"r": 1},
                       dist_ctx=ctx1, sharded=True, barrier=lambda: calls.append(1))
    assert ck.latest_checkpoint(str(tmp_path)) is None
    path = ck.save_checkpoint(str(tmp_path), 4, backbone=net, classifier=cls, trainers=tr, state={},
                              rng={"r": 0}, dist_ctx=ctx0, sharded=True, barrier=lambda: calls.append(0))
    assert sorted(os.listdir(path)) == [
        "backbone.params", "classifier-rank0.params", "classifier-rank1.params", "rng-rank0.json",
        "rng-rank1.json", "state.json", "trainer-backbone.states", "trainer-classifier-rank0.states",
        "trainer-classifier-rank1.states"]
    assert calls == [1, 1, 0, 0]
    _, rng = ck.load_checkpoint(path, backbone=net, classifier=cls, trainers=tr, dist_ctx=ctx1, ctx=[mx.cpu()])
    assert rng == {"r": 1}
    from gluonface.errors import GluonFaceError
    with pytest.raises(GluonFaceError, match="shards of 2 workers"):
        ck.load_checkpoint(path, backbone=net, classifier=cls, trainers=tr, dist_ctx=LOCAL, ctx=[mx.cpu()])


def test_best_symlink_swap(tmp_path):
    net, cls, tr = make_pair()
    ck.save_best(str(tmp_path), net, {"step": 10, "accuracy": 0.9})
    ck.save_best(str(tmp_path), net, {"step": 20, "accuracy": 0.95})
    assert os.readlink(tmp_path / "best") == ".best-00000020"
    assert json.load(open(tmp_path / "best" / "state.json"))["accuracy"] == 0.95
    assert not os.path.exists(tmp_path / ".best-00000010")
    assert ck.checkpoint_path(str(tmp_path), "best") == str(tmp_path / "best")
