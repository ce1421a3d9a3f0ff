"""Elastic training's world-size arithmetic (gluonface.engine.elastic_loop): no Horovod needed."""
from types import SimpleNamespace

import pytest

from gluonface.config import DistConfig, TrainConfig
from gluonface.parallel import DistContext
from gluonface.parallel.elastic import require_elastic_launch
from gluonface.engine.elastic_loop import check_global_batch, commit_every, resize_schedule
from gluonface.engine.schedule import resolve_schedule
from gluonface.errors import GluonFaceError


def _schedule(batch, workers, images=480):
    optim = SimpleNamespace(lr=0.1, base_batch=8, scale_lr=True, warmup_epochs=0.5, lr_steps=[1, 2],
                            schedule="step")
    return resolve_schedule(optim, SimpleNamespace(epochs=3, max_steps=0), batch, images, 1, workers)


def test_resize_keeps_the_global_batch_and_the_schedule():
    four = _schedule(batch=6, workers=4)                   # global batch 24, 20 steps per epoch
    for size in (1, 2, 3):
        small = resize_schedule(four, size)
        assert small.num_workers == size and small.batch_per_worker * size == 24
        # everything defined in steps of the global batch is untouched
        assert (small.global_batch, small.steps_per_epoch, small.total_steps, small.lr, small.warmup_steps,
                small.decay_steps) == (24, 20, 60, four.lr, 10, (20, 40))


def test_sizes_that_cannot_split_the_global_batch_are_refused_up_front():
    four = _schedule(batch=4, workers=4)                   # 16 images: 3 workers cannot share them
    check_global_batch(four, 4, 4)
    with pytest.raises(GluonFaceError, match=r"cannot be split evenly over 3 worker\(s\).*--min-workers"):
        check_global_batch(four, 1, 4)
    with pytest.raises(GluonFaceError, match="over 3 worker"):
        resize_schedule(four, 3)


def test_commit_cadence_follows_checkpoints_unless_set():
    assert commit_every(DistConfig(), TrainConfig(checkpoint_every=500)) == 500
    assert commit_every(DistConfig(commit_every=20), TrainConfig(checkpoint_every=500)) == 20


def test_elastic_needs_horovods_elastic_driver(monkeypatch):
    monkeypatch.delenv("HOROVOD_ELASTIC", raising=False)
    with pytest.raises(GluonFaceError, match="--elastic"):
        require_elastic_launch(DistContext("horovod"))
    monkeypatch.setenv("HOROVOD_ELASTIC", "1")
    with pytest.raises(GluonFaceError, match="engine here: local"):
        require_elastic_launch(DistContext("local"))
    require_elastic_launch(DistContext("horovod"))


@pytest.mark.parametrize("text, peer_gone", [
    # what a survivor's collective raised when the other rank was SIGKILLed (MXNet's reformatting kept)
    ('Traceback (most recent call last):\n  File "Read error [127.0.0.1]", line 33198\nMXNetError: Connection '
     'reset by peer', True),
    ("[/tmp/gloo/transport/tcp/pair.cc:598] Connection closed by peer [10.0.0.2]:41234", True),
    ("Write error [127.0.0.1]:5555: Broken pipe", True),
    ("Horovod has been shut down. This was caused by an exception on one of the ranks", True),
    ("Check failed: e == cudaSuccess: out of memory", False),
    ("Shape inconsistent, Provided = [4,3], inferred shape=[4,2]", False),
])
def test_broken_collectives_roll_back_and_real_errors_fail(text, peer_gone):
    import mxnet as mx
    from gluonface.parallel.elastic import _from_horovod
    assert _from_horovod(mx.base.MXNetError(text)) is peer_gone
