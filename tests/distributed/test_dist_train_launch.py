"""`gluonface launch` running the real `gluonface train` on every worker, for both engines.

A tiny rec (48 images, 8 identities) and the smallest backbone; every job is a few dozen steps.
"""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluonface.data.record import RecordWriter

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

CONFIG = """base: {base}
data: {{rec: {rec}, batch_size: 4, num_workers: 0, flip: false}}
model: {{name: iresnet_tiny, embedding_size: 16}}
loss: {{name: arcface, s: 16.0, m2: 0.2}}
optim: {{lr: 0.05, base_batch: 8, scale_lr: false, schedule: constant}}
train: {{max_steps: {steps}, devices: cpu, log_every: 1, checkpoint_every: {every}, progress_bar: false}}
eval: {{bins: []}}
"""
BASE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "base.yaml")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("launchdata")
    rng = np.random.default_rng(0)
    writer = RecordWriter(str(root / "train"))
    for i in range(48):
        writer.add_image(cv2.imencode(".png", rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))[1].tobytes(),
                         i // 6)
    writer.close(image_size=(112, 112))
    return root


def _config(tmp_path, data, steps, every=0):
    path = tmp_path / "cfg.yaml"
    path.write_text(CONFIG.format(base=os.path.abspath(BASE), rec=data / "train", steps=steps, every=every))
    return str(path)


def _launch_argv(cfg, engine, run_dir, *extra):
    return [sys.executable, "-m", "gluonface", "launch", cfg, "--engine", engine, "--workers", "2",
            "--set", f"train.run_dir={run_dir}", "--timeout", "240"] + list(extra)


def _params(run_dir, name, which=None):
    ck = os.path.join(run_dir, "checkpoints")
    which = which or open(os.path.join(ck, "latest")).read().strip()
    return {k: v.asnumpy() for k, v in mx.nd.load(os.path.join(ck, which, name)).items()}


def test_kvstore_and_horovod_train_the_same_model(tmp_path, data):
    cfg = _config(tmp_path, data, steps=3)
    runs = {}
    for engine in ("kvstore", "horovod"):
        runs[engine] = str(tmp_path / engine)
        proc = subprocess.run(_launch_argv(cfg, engine, runs[engine]), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("backbone.params", "classifier.params"):
        kv, hvd = _params(runs["kvstore"], name), _params(runs["horovod"], name)
        assert set(kv) == set(hvd)
        for key in kv:
            np.testing.assert_allclose(kv[key], hvd[key], rtol=1e-4, atol=1e-5, err_msg=key)
    with open(os.path.join(runs["kvstore"], "metrics.jsonl")) as f:
        losses = [json.loads(line)["loss"] for line in f if '"loss"' in line]
    assert len(losses) == 3 and losses[0] != losses[-1]   # three real steps were taken


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("engine", ["kvstore", "horovod"])
def test_sigkill_worker_then_resume(tmp_path, data, engine):
    cfg = _config(tmp_path, data, steps=40, every=5)
    run_dir, logs = str(tmp_path / "run"), str(tmp_path / "logs")
    proc = subprocess.Popen(_launch_argv(cfg, engine, run_dir, "--log-dir", logs), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    latest = os.path.join(run_dir, "checkpoints", "latest")
    deadline = time.monotonic() + 200
    while not os.path.exists(latest) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before a checkpoint appeared"
    with open(os.path.join(logs, "processes.json")) as f:
        table = json.load(f)
    os.kill(table["worker-1"]["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert time.monotonic() - killed_at < 60
    assert proc.returncode not in (0, 124), err[-3000:]
    assert "died" in err and "worker-" in err
    assert not [name for name, info in table.items() if _alive(info["pid"])]

    # the checkpoint the kill interrupted the job after is complete and loadable
    from gluonface.engine.checkpoint import load_backbone
    net, info = load_backbone(run_dir, "latest")
    with open(os.path.join(run_dir, "checkpoints", open(latest).read().strip(), "state.json")) as f:
        stopped_at = json.load(f)["step"]
    assert 0 < stopped_at < 40 and stopped_at % 5 == 0

    done = subprocess.run(_launch_argv(cfg, engine, run_dir, "--resume", "auto"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr + done.stdout
    with open(os.path.join(run_dir, "checkpoints", open(latest).read().strip(), "state.json")) as f:
        assert json.load(f)["step"] == 40
