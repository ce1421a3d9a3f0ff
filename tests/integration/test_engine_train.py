"""`gluonface train` end to end on tiny recs: exact resume after SIGKILL, bf16 AMP, a headerless rec,
`--resume auto` without a checkpoint, refusing to overwrite a run, config errors from the CLI."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from gluonface.data.record import RecordWriter
from gluonface.data.synthetic import SynthSpec, render_image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(REPO, "configs", "base.yaml")


def faces(ids, per_id, seed=0):
    """(identity, JPEG bytes) of synthetic aligned faces, grouped by identity."""
    spec = SynthSpec(identities=ids, images_per_id=per_id, seed=seed)
    for i in range(ids):
        for j in range(per_id):
            img, _ = render_image(spec, i, j)
            yield i, cv2.imencode(".jpg", img)[1].tobytes()


def make_rec(prefix, ids=6, per_id=8):
    w = RecordWriter(prefix)
    for label, jpg in faces(ids, per_id):
        w.add_image(jpg, label)
    w.close(image_size=(112, 112))
    return prefix


def make_headerless_rec(prefix, ids=6, per_id=8):
    """A rec as mxnet's im2rec writes it: keys from 0, scalar labels, no header or identity records."""
    import mxnet as mx
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    rec = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    items = list(faces(ids, per_id))
    order = np.random.RandomState(0).permutation(len(items))   # shuffled, like im2rec's list
    for key, i in enumerate(order):
        label, jpg = items[i]
        rec.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), key, 0), jpg))
    rec.close()
    with open(os.path.join(os.path.dirname(prefix), "property"), "w") as f:
        f.write(f"{ids},112,112\n")
    return prefix


def write_config(tmp_path, rec, **sections):
    import yaml
    doc = {"base": BASE,
           "data": {"rec": rec, "batch_size": 8, "num_workers": 0},
           "model": {"name": "iresnet_tiny", "embedding_size": 32, "head": "FC"},
           "loss": {"s": 16.0, "m2": 0.2},
           "optim": {"lr": 0.05, "base_batch": 8, "schedule": "cosine", "warmup_epochs": 0.2},
           "train": {"epochs": 2, "log_every": 2, "checkpoint_every": 0, "progress_bar": False,
                     "run_dir": str(tmp_path / "run")}}
    for s, body in sections.items():
        doc.setdefault(s, {}).update(body)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def gluonface(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "gluonface", *args], capture_output=True, text=True, env=env,
                          cwd=kw.get("cwd"), timeout=600)


def load_params(path):
    import mxnet as mx
    return {k: v.asnumpy() for k, v in mx.nd.load(path).items()}


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    """2N steps straight == N steps, SIGKILL, --resume auto to 2N (fp32, CPU, dropout on)."""
    rec = make_rec(str(tmp_path / "data" / "train"))
    sets = ["--set", "train.max_steps=12", "--set", "train.checkpoint_every=4", "--set", "model.head=E",
            "--set", "model.dropout=0.3", "--set", "train.checkpoint_at_epoch_end=false"]
    cfg = write_config(tmp_path, rec)
    straight = gluonface("train", cfg, *sets, "--set", f"train.run_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr

    run = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.Popen([sys.executable, "-m", "gluonface", "train", cfg, *sets, "--set",
                             f"train.run_dir={run}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = run / "checkpoints" / "latest"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if latest.exists() and latest.read_text().strip() in ("step-00000004", "step-00000008"):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = latest.read_text().strip()
    assert killed_at != "step-00000012"

    resumed = gluonface("train", cfg, *sets, "--set", f"train.run_dir={run}", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {run / 'checkpoints' / killed_at}" in resumed.stdout + resumed.stderr
    for name in ("backbone.params", "classifier.params"):
        a = load_params(str(tmp_path / "straight" / "checkpoints" / "step-00000012" / name))
        b = load_params(str(run / "checkpoints" / "step-00000012" / name))
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")


def test_bf16_training_is_refused_up_front_and_auto_trains_float32(tmp_path):
    """train.amp=bf16 is refused before anything is built, with the measured reason and the fix (bf16
    gradients miss float32's by more than the bar, gluonface.precision); train.amp=auto trains float32."""
    rec = make_rec(str(tmp_path / "data" / "train"))
    cfg = write_config(tmp_path, rec, train={"amp": "bf16", "max_steps": 2})
    r = gluonface("train", cfg)
    assert r.returncode == 2 and "bfloat16 training is refused" in r.stderr and "fix:" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run" / "checkpoints").exists()
    auto = gluonface("train", cfg, "--set", "train.amp=auto", "--set", f"train.run_dir={tmp_path / 'auto'}")
    assert auto.returncode == 0, auto.stderr
    assert "training in float32" in auto.stdout


def test_headerless_rec_and_resume_auto_without_checkpoint(tmp_path, capsys):
    """Trains in-process on an im2rec-style rec; --resume auto on an empty run dir starts fresh with a note."""
    from gluonface.engine.checkpoint import load_backbone
    from gluonface.engine.train import train_config
    rec = make_headerless_rec(str(tmp_path / "data" / "train"))
    cfg = write_config(tmp_path, rec, train={"max_steps": 4})
    result = train_config(cfg, resume="auto")
    assert "no checkpoint" in capsys.readouterr().out
    assert result["step"] == 4 and result["schedule"]["num_images"] == 48
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "train.log", "curves.png", "checkpoints/latest"):
        assert (run / name).exists(), name
    assert os.listdir(run / "tb")
    net, info = load_backbone(str(run), "latest")
    assert info["step"] == 4 and info["model"]["name"] == "iresnet_tiny"
    import mxnet as mx
    assert net(mx.nd.zeros((2, 3, 112, 112))).shape == (2, 32)
    # a second fresh start would overwrite the run: refused, with the fix
    from gluonface.errors import GluonFaceError
    with pytest.raises(GluonFaceError, match="--resume auto"):
        train_config(cfg)
    # resuming with a changed numeric key is refused and names the key
    with pytest.raises(GluonFaceError, match=r"optim\.lr"):
        train_config(cfg, ["optim.lr=0.5"], resume="auto")


def test_cli_config_errors_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {BASE}\noptim:\n  lr: -1\n")
    r = gluonface("train", str(bad))
    assert r.returncode == 2 and "optim.lr" in r.stderr and str(bad) in r.stderr and "fix:" in r.stderr
    assert "Traceback" not in r.stderr
    r = gluonface("train", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"base: {BASE}\ndata:\n  rec: {tmp_path / 'nope' / 'train'}\n")
    r = gluonface("train", str(ok))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


def test_two_devices_in_one_process_split_the_batch(tmp_path, capsys):
    """devices=cpu:2: each step splits the worker batch over two contexts (BatchNorm statistics are then
    per slice, so the trajectory is not the single-device one) and the run trains and checkpoints."""
    import mxnet as mx
    from gluonface.engine.checkpoint import load_backbone
    from gluonface.engine.train import train_config
    rec = make_rec(str(tmp_path / "data" / "train"))
    cfg = write_config(tmp_path, rec, train={"max_steps": 3, "checkpoint_at_epoch_end": False})
    two = train_config(cfg, ["train.devices=cpu:2", f"train.run_dir={tmp_path / 'two'}", "data.batch_size=4"])
    assert two["schedule"]["global_batch"] == 8 and two["schedule"]["num_devices"] == 2
    out = capsys.readouterr()
    assert "overwritten" not in out.out + out.err
    net, _ = load_backbone(str(tmp_path / "two"), "latest")
    rows = [json.loads(l) for l in open(tmp_path / "two" / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [2, 3]
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert net(mx.nd.zeros((1, 3, 112, 112))).shape == (1, 32)


def test_partial_fc_resume_is_bitwise_identical(tmp_path):
    """The sharded classifier (Partial FC, sampled negatives) rides through checkpoints as its own files
    and resumes exactly: 6 steps straight == 3 steps + resume to 6 (in-process runs)."""
    from gluonface.engine.train import train_config
    rec = make_rec(str(tmp_path / "data" / "train"))
    cfg = write_config(tmp_path, rec, loss={"partial_fc": True, "sample_rate": 0.5},
                       train={"checkpoint_every": 3, "checkpoint_at_epoch_end": False})
    train_config(cfg, ["train.max_steps=6", f"train.run_dir={tmp_path / 'a'}"])
    train_config(cfg, ["train.max_steps=3", f"train.run_dir={tmp_path / 'b'}"])
    train_config(cfg, ["train.max_steps=6", f"train.run_dir={tmp_path / 'b'}"], resume="auto")
    step = "checkpoints/step-00000006"
    assert "classifier-rank0.params" in os.listdir(tmp_path / "a" / step)
    for name in ("backbone.params", "classifier-rank0.params"):
        a, b = load_params(str(tmp_path / "a" / step / name)), load_params(str(tmp_path / "b" / step / name))
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
