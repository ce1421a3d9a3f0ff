"""The same loop under both distributed engines: 2 workers through `gluonface launch`, parameter servers
vs Horovod, give the same training (losses and final parameters), and write one run directory with
per-rank RNG states."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_engine_train import load_params, make_rec, write_config


def launch(cfg, engine, run_dir, tmp_path):
    extra = ["--servers", "1"] if engine == "kvstore" else []
    cmd = [sys.executable, "-m", "gluonface", "launch", cfg, "--engine", engine, "--workers", "2", *extra,
           "--set", f"train.run_dir={run_dir}", "--set", "train.max_steps=6", "--set", "train.checkpoint_every=3",
           "--set", "data.batch_size=4", "--log-dir", str(tmp_path / f"logs-{engine}"), "--timeout", "400"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=500,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.distributed
def test_kvstore_and_horovod_train_identically(tmp_path):
    rec = make_rec(str(tmp_path / "data" / "train"))
    cfg = write_config(tmp_path, rec)
    runs = {e: tmp_path / f"run-{e}" for e in ("kvstore", "horovod")}
    for engine, run in runs.items():
        launch(cfg, engine, str(run), tmp_path)
        step = run / "checkpoints" / "step-00000006"
        assert sorted(f for f in os.listdir(step) if f.startswith("rng-")) == ["rng-rank0.json", "rng-rank1.json"]
        assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000006"
        derived = json.loads(json.dumps(__import__("yaml").safe_load(open(run / "config.yaml"))["derived"]))
        assert derived["global_batch"] == 8 and derived["num_workers"] == 2
    losses = {e: [r["loss"] for r in map(json.loads, open(run / "metrics.jsonl")) if r["kind"] == "train"]
              for e, run in runs.items()}
    assert len(losses["kvstore"]) == 3
    np.testing.assert_allclose(losses["kvstore"], losses["horovod"], rtol=1e-4)
    a = load_params(str(runs["kvstore"] / "checkpoints" / "step-00000006" / "backbone.params"))
    b = load_params(str(runs["horovod"] / "checkpoints" / "step-00000006" / "backbone.params"))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-5, err_msg=k)
