"""The real `gluonface train`: 2 kvstore workers of batch B == 1 process of batch 2B split over 2 devices.

Step s's global batch is the same 2B samples in both jobs and worker k gets the slice device k gets from
`split_and_load`, so every BatchNorm layer normalises the same per-device batches and the two runs train the
same model: the same loss at every step and the same trained weights.

BatchNorm running statistics are not compared: they never enter a training step, and the two checkpoints
hold different things (a multi-device process saves the mean of its devices' copies — MXNet's
``Parameter._reduce`` — while a kvstore job saves rank 0's own copy, i.e. device 0's).
"""
import json
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluonface.data.record import RecordWriter

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

BASE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "base.yaml")
B = 4   # images per device (single process, cpu:2) = per worker (kvstore, 2 workers)
CONFIG = """base: {base}
data: {{rec: {rec}, batch_size: {b}, num_workers: 0, flip: true}}
model: {{name: iresnet_tiny, embedding_size: 16}}
loss: {{name: arcface, s: 16.0, m2: 0.2}}
optim: {{lr: 0.05, base_batch: 8, scale_lr: false, schedule: constant}}
train: {{epochs: 4, max_steps: 4, devices: cpu, log_every: 1, checkpoint_every: 0, progress_bar: false}}
eval: {{bins: []}}
"""


def _losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f if '"loss"' in line]


def _params(run_dir, name):
    ck = os.path.join(run_dir, "checkpoints")
    which = open(os.path.join(ck, "latest")).read().strip()
    return {k: v.asnumpy() for k, v in mx.nd.load(os.path.join(ck, which, name)).items()}


def test_two_workers_of_batch_b_train_like_one_process_of_batch_2b_on_two_devices(tmp_path):
    rng = np.random.default_rng(0)
    writer = RecordWriter(str(tmp_path / "train"))
    for i in range(48):   # 6 steps per epoch at a global batch of 8; the 4 steps stay within epoch 0
        writer.add_image(cv2.imencode(".png", rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))[1].tobytes(),
                         i // 6)
    writer.close(image_size=(112, 112))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(base=os.path.abspath(BASE), rec=tmp_path / "train", b=B))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single, dist = str(tmp_path / "single"), str(tmp_path / "dist")
    proc = subprocess.run([sys.executable, "-m", "gluonface", "train", str(cfg), "--set", "train.devices=cpu:2",
                           "--set", f"train.run_dir={single}"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-m", "gluonface", "launch", str(cfg), "--engine", "kvstore",
                           "--workers", "2", "--servers", "1", "--set", f"train.run_dir={dist}",
                           "--timeout", "400"], capture_output=True, text=True, env=env, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = _losses(single)
    assert len(losses) == 4 and len(set(losses)) == 4   # four real steps
    np.testing.assert_allclose(_losses(dist), losses, rtol=1e-4)
    for name in ("backbone.params", "classifier.params"):
        a, b = _params(single, name), _params(dist, name)
        assert set(a) == set(b) and a
        for key in a:
            if "running_" not in key:
                np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)
