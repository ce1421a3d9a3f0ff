"""The real `gluonface launch CONFIG --engine horovod --workers 2 --elastic --min-workers 1`: a worker of
`gluonface train` is SIGKILLed mid-run, the survivor restores the last commit and finishes the run alone.

A tiny rec (48 images, 8 identities, global batch 8 = 6 steps per epoch) and the smallest backbone; a cosine
learning rate, so a step counter or optimizer update count that did not roll back would show in the lr.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest

# the same tiny rec as the non-elastic launch tests (48 noise images, 8 identities, 112x112)
from test_dist_train_launch import BASE, data  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STEPS, KILL_AFTER = 60, 10
CONFIG = """base: {base}
data: {{rec: {rec}, batch_size: 4, num_workers: 0, flip: false}}
model: {{name: iresnet_tiny, embedding_size: 16}}
loss: {{name: arcface, s: 16.0, m2: 0.2}}
optim: {{lr: 0.05, base_batch: 8, scale_lr: false, schedule: cosine}}
train: {{max_steps: {steps}, devices: cpu, log_every: 1, checkpoint_every: 4, progress_bar: false}}
eval: {{bins: []}}
"""


@pytest.fixture(scope="module")
def config(data):
    path = data / "elastic.yaml"
    path.write_text(CONFIG.format(base=os.path.abspath(BASE), rec=data / "train", steps=STEPS))
    return str(path)


def _workers(run_dir):
    """{initial Horovod rank: pid} of the `gluonface train` processes of this run (read from /proc)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if f"train.run_dir={run_dir}".encode() not in argv or b"train" not in argv:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if b"HOROVOD_RANK" in env:
            found[int(env[b"HOROVOD_RANK"])] = int(pid)
    return found


def _commits(text):
    return [int(s) for s in re.findall(r"elastic: committed step (\d+)", text)]


def _expected_lr(config_path, steps):
    """The cosine schedule's lr after each step, computed apart from the run (2 workers × batch 4, 48 images)."""
    from gluonface.config import load_config
    from gluonface.engine.schedule import make_lr_scheduler, resolve_schedule
    cfg = load_config(config_path)
    sched = resolve_schedule(cfg.optim, cfg.train, cfg.data.batch_size, 48, 1, 2)
    lr = make_lr_scheduler(cfg.optim, sched)
    return [lr(s) for s in steps]


def _launch_and_kill(root, config, victim):
    """Start the job, SIGKILL the process that started as rank ``victim`` after step KILL_AFTER; returns
    (returncode, launcher stderr, run_dir, log_dir, commits logged before the kill)."""
    run_dir, logs = str(root / "run"), str(root / "logs")
    argv = [sys.executable, "-m", "gluonface", "launch", config, "--engine", "horovod", "--workers", "2",
            "--elastic", "--min-workers", "1", "--set", f"train.run_dir={run_dir}", "--log-dir", logs,
            "--timeout", "100"]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    train_log = os.path.join(run_dir, "train.log")
    # kill after step 10: commits so far at 4, 6 (epoch end) and 8, so steps 9 and 10 are not committed
    text = ""
    while f"step {KILL_AFTER}/" not in text and proc.poll() is None and time.monotonic() - t0 < 90:
        time.sleep(0.02)
        text = open(train_log).read() if os.path.exists(train_log) else ""
    seen = _commits(text)
    assert proc.poll() is None and seen, "the job ended (or stalled) before the kill"
    workers = _workers(run_dir)
    assert sorted(workers) == [0, 1]
    os.kill(workers[victim], signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = proc.communicate(timeout=150)
    print(f"killed rank {victim} after step {KILL_AFTER} (commit {seen[-1]}) at {killed_at - t0:.1f} s; "
          f"launcher exited {time.monotonic() - killed_at:.1f} s later with {proc.returncode}")
    assert not [pid for pid in workers.values() if os.path.exists(f"/proc/{pid}")]   # nothing left behind
    return proc.returncode, err, run_dir, logs, seen


def _native_crash_or_hang(logs):
    """Whether the job failed the way Horovod 0.28.1 / MXNet 1.9.1 races fail about one survivor in 16 here
    (``parallel.elastic.fail_fast_on_native_crash``): a SIGSEGV (139, Python's fault dump) or a hang that the
    launcher's timeout ended (SIGTERM, 143)."""
    log = open(os.path.join(logs, "horovodrun.log")).read()
    return "exit with status code 139" in log or "Fatal Python error" in log or "status code 143" in log


@pytest.mark.parametrize("victim", [0, 1], ids=["kill-rank0", "kill-rank1"])
def test_survivor_restores_commit_and_finishes(tmp_path, config, victim):
    code, err, run_dir, logs, seen = _launch_and_kill(tmp_path / "a", config, victim)
    if code != 0 and _native_crash_or_hang(logs):
        # one rerun for the upstream races only; a gluonface regression fails the same way twice
        print("first attempt hit a native crash/hang in Horovod or MXNet; rerunning once:\n" + err[-1500:])
        code, err, run_dir, logs, seen = _launch_and_kill(tmp_path / "b", config, victim)
    # the survivor's own error is in horovodrun.log, not in the launcher's summary
    assert code == 0, err[-1500:] + "\n--- horovodrun.log ---\n" + open(os.path.join(logs, "horovodrun.log")).read()[-3000:]
    assert "all processes finished" in err

    train_log = os.path.join(run_dir, "train.log")
    text = open(train_log).read()
    hvd_log = open(os.path.join(logs, "horovodrun.log")).read()
    assert "exit with status code 137" in hvd_log          # Horovod's driver saw the SIGKILLed worker
    resets = re.findall(r"elastic: reset 1: 1 worker\(s\) now \(was 2\), this process is rank 0 \(was rank "
                        r"(\d)\); restored the commit of step (\d+), per-worker batch 8", text)
    assert len(resets) == 1, text[-3000:]
    was_rank, restored = int(resets[0][0]), int(resets[0][1])
    assert was_rank == 1 - victim                            # the survivor took over the logs as rank 0
    before = _commits(text.split("elastic: reset 1")[0])
    # nothing committed was lost: the survivor continued from the newest commit made before the kill, and
    # redid the steps it had finished since (an lr schedule that did not roll back would show below)
    assert restored >= seen[-1] and restored == before[-1]
    redone = re.search(rf"commit of step {restored}, per-worker batch 8; redoing uncommitted steps "
                       rf"{restored + 1}\.\.(\d+)", text)
    assert restored >= KILL_AFTER or (redone and int(redone.group(1)) >= KILL_AFTER), text[-2000:]
    assert f"done: {STEPS} steps in {run_dir}" in hvd_log

    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        train = [r for r in map(json.loads, f) if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))   # each step once, in order
    np.testing.assert_allclose([r["lr"] for r in train], _expected_lr(config, range(1, STEPS + 1)), rtol=1e-6)

    ckpt = os.path.join(run_dir, "checkpoints")
    latest = open(os.path.join(ckpt, "latest")).read().strip()
    with open(os.path.join(ckpt, latest, "state.json")) as f:
        state = json.load(f)
    assert (state["step"], state["num_workers"], state["global_batch"]) == (STEPS, 1, 8)
    from gluonface.engine.checkpoint import load_backbone
    net, _ = load_backbone(run_dir, "latest")
    emb = net(mx.nd.zeros((1, 3, 112, 112))).asnumpy()
    assert emb.shape == (1, 16) and np.isfinite(emb).all()
