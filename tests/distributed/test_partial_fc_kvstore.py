"""Partial FC on parameter servers: 1 scheduler, 2 servers (the matrix sliced over both), 2 workers.

Equivalence is against ONE NumPy process (tests/distributed/partial_fc_reference.py) on the same global
batches; the backbone trainer shares the store (``update_on_kvstore=False``) with the centre keys.
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
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "partial_fc_kv_worker.py")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    base = tmp_path_factory.mktemp("pfc_kv")
    out = base / "out"
    out.mkdir()
    req = LaunchRequest(config="-", engine="kvstore", workers=2, servers=2, kvstore="dist_sync",
                        command=(sys.executable, WORKER, str(out)), log_dir=str(base / "logs"), timeout=240)
    rc = launch(req, echo=None)
    assert rc == 0, open(base / "logs" / "worker-0.log").read()[-3000:]
    return out


def _ranks(out, name):
    return [dict(np.load(os.path.join(out, f"{name}-rank{r}.npz"))) for r in (0, 1)]


@pytest.mark.parametrize("name,margin", [("arcface", (16.0, 1.0, 0.5, 0.0)), ("cosface", (16.0, 1.0, 0.0, 0.4))])
def test_two_workers_equal_full_softmax_of_one_process(job, name, margin):
    ranks = _ranks(job, f"equiv-{name}")
    x, y = global_batches(5, 3, 8, 10)
    A, W, losses = ref.train_reference(x, y, backbone_init(3), init_rows(3, 0, 10, E), 3, *margin,
                                       lr=0.1, momentum=0.9, wd=5e-4)
    np.testing.assert_allclose(ranks[0]["W"], W, rtol=1e-4, atol=1e-4)     # pulled back from the servers
    for r in ranks:
        np.testing.assert_allclose(r["A"], A, atol=2e-5)
    got_losses = np.concatenate([r["losses"].reshape(3, 4) for r in ranks], axis=1)
    np.testing.assert_allclose(got_losses, losses, rtol=1e-4, atol=1e-4)
    assert not np.allclose(W, init_rows(3, 0, 10, E), atol=1e-3)


def test_resume_with_server_side_centres_and_momentum_reproduces_straight_run(job):
    straight, resumed = _ranks(job, "resume-straight"), _ranks(job, "resume-resumed")
    np.testing.assert_array_equal(straight[0]["W"], resumed[0]["W"])
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a["A"], b["A"])
    written = {n for n in os.listdir(job / "ckpt-resume") if n.startswith("classifier")}
    assert written == {"classifier-block00000.params", "classifier-block00001.params",   # 20 rows, blocks of 16
                       "classifier.json"}


def test_workers_hold_only_pulled_rows_and_loss_falls_with_sampling(job):
    for r in _ranks(job, "sampling"):
        assert bool(r["positives_ok"])
        assert int(r["pulled"]) == 40                 # ceil(0.1 * 400) rows, not 400
        assert int(r["params"]) == 0                  # no Parameter of C rows on the worker
        losses = r["losses"].reshape(40, 8).mean(axis=1)
        assert losses[-5:].mean() < 0.6 * losses[:5].mean()


def test_worker_memory_follows_rows_pulled_not_classes(job):
    # rank 1 never holds the matrix (rank 0 builds it block by block to initialise the servers); its resident
    # memory grows by a fixed ~16 MB (ps-lite, engine threads) whatever C is, far below the 195 MB matrix
    rank1 = dict(np.load(os.path.join(job, "memory-rank1.npz")))
    assert int(rank1["pulled"]) == 800
    assert float(rank1["growth_mb"]) < 0.2 * float(rank1["matrix_mb"])
