"""Partial FC through `gluonface launch` + `gluonface train`, both engines, W = 2: the run finishes, writes
the sharded / server-side classifier into its checkpoints, and a resume from the middle checkpoint ends
with the same files as the uninterrupted run (sampling on, so the step counter must resume too)."""
import os
import shutil
import subprocess
import sys

import cv2
import pytest
import yaml

from gluonface.data.record import RecordWriter
from gluonface.data.synthetic import SynthSpec, render_image

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("pfc_rec") / "train")
    spec = SynthSpec(identities=6, images_per_id=8, seed=0)
    writer = RecordWriter(prefix)
    for i in range(6):
        for j in range(8):
            writer.add_image(cv2.imencode(".jpg", render_image(spec, i, j)[0])[1].tobytes(), i)
    writer.close(image_size=(112, 112))
    return prefix


def _config(tmp_path, rec, engine):
    doc = {"base": os.path.join(REPO, "configs", "base.yaml"),
           "data": {"rec": rec, "batch_size": 8, "num_workers": 0},
           "model": {"name": "iresnet_tiny", "embedding_size": 32, "head": "FC"},
           "loss": {"name": "cosface", "s": 16.0, "m2": 0.0, "m3": 0.3, "partial_fc": True, "sample_rate": 0.5},
           "optim": {"lr": 0.05, "base_batch": 8, "schedule": "cosine", "warmup_epochs": 0.2},
           "train": {"epochs": 2, "log_every": 3, "checkpoint_every": 3, "progress_bar": False, "hybridize": False,
                     "run_dir": str(tmp_path / "run")},
           "dist": {"engine": engine, "kvstore": "dist_sync" if engine == "kvstore" else "device"}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _launch(cfg, engine, *extra):
    cmd = [sys.executable, "-m", "gluonface", "launch", cfg, "--engine", engine, "--workers", "2",
           "--timeout", "300", *extra] + (["--servers", "1"] if engine == "kvstore" else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("engine,classifier_files", [
    ("horovod", ["classifier-rank0.params", "classifier-rank1.params",
                 "trainer-classifier-rank0.states", "trainer-classifier-rank1.states"]),
    ("kvstore", ["classifier-block00000.params", "classifier.json"])])
def test_train_and_resume_with_partial_fc(tmp_path, rec, engine, classifier_files):
    cfg = _config(tmp_path, rec, engine)
    _launch(cfg, engine)
    ckpts = tmp_path / "run" / "checkpoints"
    final = ckpts / "step-00000006"
    for name in classifier_files + ["backbone.params"]:
        assert (final / name).is_file(), sorted(os.listdir(final))
    straight = tmp_path / "straight"
    shutil.copytree(final, straight)
    shutil.rmtree(final)                                   # back to the middle checkpoint
    (ckpts / "latest").write_text("step-00000003\n")
    _launch(cfg, engine, "--resume", "auto")
    for name in classifier_files + ["backbone.params"]:
        assert (final / name).read_bytes() == (straight / name).read_bytes(), name
