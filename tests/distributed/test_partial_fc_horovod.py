"""Partial FC over Horovod with W = 2 real processes (one job, several scenarios; see the worker).

Equivalence is against tests/distributed/partial_fc_reference.py: ONE NumPy process training the same
linear backbone and the full (unsharded) margin softmax on the same global batches.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import partial_fc_reference as ref  # noqa: E402
from partial_fc_hvd_worker import E, backbone_init, global_batches  # noqa: E402

from gluonface.launch.job import LaunchRequest, launch  # noqa: E402
from gluonface.losses.partial_fc.shard import init_rows  # noqa: E402

pytestmark = pytest.mark.distributed
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "partial_fc_hvd_worker.py")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    base = tmp_path_factory.mktemp("pfc_hvd")
    out = base / "out"
    out.mkdir()
    req = LaunchRequest(config="-", engine="horovod", workers=2, command=(sys.executable, WORKER, str(out)),
                        log_dir=str(base / "logs"), timeout=240)
    rc = launch(req, echo=None)
    assert rc == 0, open(base / "logs" / "worker-0.log").read()[-3000:]
    return out


def _ranks(out, name):
    return [dict(np.load(os.path.join(out, f"{name}-rank{r}.npz"))) for r in (0, 1)]


@pytest.mark.parametrize("name,margin", [("arcface", (16.0, 1.0, 0.5, 0.0)), ("cosface", (16.0, 1.0, 0.0, 0.4))])
def test_two_ranks_equal_full_softmax_of_one_process(job, name, margin):
    ranks = _ranks(job, f"equiv-{name}")
    assert ranks[0]["W"].shape == (5, E) and int(ranks[1]["start"]) == 5     # each rank holds C/W rows
    x, y = global_batches(5, 3, 8, 10)
    A, W, losses = ref.train_reference(x, y, backbone_init(3), init_rows(3, 0, 10, E), 3, *margin,
                                       lr=0.1, momentum=0.9, wd=5e-4)
    got_w = np.concatenate([r["W"] for r in ranks])
    np.testing.assert_allclose(got_w, W, atol=2e-5)
    for r in ranks:
        np.testing.assert_allclose(r["A"], A, atol=2e-5)
    got_losses = np.concatenate([r["losses"].reshape(3, 4) for r in ranks], axis=1)
    np.testing.assert_allclose(got_losses, losses, rtol=1e-4, atol=1e-5)
    assert not np.allclose(W, init_rows(3, 0, 10, E), atol=1e-3)      # the centres did train


def test_resume_from_sharded_checkpoint_reproduces_straight_run(job):
    straight, resumed = _ranks(job, "resume-straight"), _ranks(job, "resume-resumed")
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a["W"], b["W"])
        np.testing.assert_array_equal(a["A"], b["A"])
    assert os.path.exists(job / "ckpt" / "classifier-rank1.params")
    assert os.path.exists(job / "ckpt" / "trainer-classifier-rank1.states")


def test_sampling_keeps_positives_and_loss_falls(job):
    for r in _ranks(job, "sampling"):
        assert bool(r["positives_ok"])
        assert int(r["num_rows"]) < int(r["num_local"])        # it really sampled
        losses = r["losses"].reshape(40, 8).mean(axis=1)
        assert losses[-5:].mean() < 0.6 * losses[:5].mean()


def test_uneven_batches_give_exact_losses_and_gradients(job):
    """Losses and feature gradients are those of the full softmax; each centre gradient is 1/W of it
    (the convention that matches DistributedTrainer's averaging of the backbone)."""
    ranks = _ranks(job, "uneven")
    x, y = global_batches(9, 1, 8, 10)
    emb = np.pad(x[0], ((0, 0), (0, E - x.shape[2])))
    loss, d_emb, d_w = ref.loss_and_grads(emb, init_rows(3, 0, 10, E), y[0], 16.0, 1.0, 0.5, 0.0)
    np.testing.assert_allclose(np.concatenate([r["loss"] for r in ranks]), loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([r["emb_grad"] for r in ranks]), d_emb, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([r["W_grad"] for r in ranks]), d_w / 2, rtol=1e-3, atol=1e-4)
