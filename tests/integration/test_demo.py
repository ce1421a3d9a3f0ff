"""`make demo` (tools/demo.py) on a smaller setting: every stage of the product through the CLI, ending in a
report that names real figures and real files."""
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = ("synth", "align", "pack", "inspect", "synth-holdout", "align-holdout", "pairs", "inspect-pairs", "train-kvstore",
          "train-horovod", "eval", "export", "embed")


@pytest.mark.slow
@pytest.mark.distributed
def test_demo_quick_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--out", str(out), "--quick"],
                         capture_output=True, text=True, env=env, timeout=1500)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for stage in STAGES:
        assert f"-- {stage}: exit 0" in res.stdout, stage
    assert "packed 240 images of 40 identities" in res.stdout
    assert "wrote 120 pairs (60 positive, 60 negative) from 12 identities" in res.stdout
    # artefacts the report points at exist and are what they claim
    for png in ("contact_sheet.png", "pairs.png", "eval/roc.png", "runs/kvstore/curves.png"):
        assert cv2.imread(str(out / png)) is not None, png
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == (120, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    for f in ("model-symbol.json", "model-0000.params", "model.onnx", "model-int8-symbol.json", "export.json"):
        assert (out / "exported" / f).is_file(), f
    report = (out / "REPORT.md").read_text()
    # both engines trained the same job from the same data: the report shows the same final loss twice
    losses = re.findall(r"\| (?:parameter servers|Horovod) \(`runs/\w+`\) \| (\d+) \| ([\d.]+) \|", report)
    assert len(losses) == 2 and losses[0] == losses[1] and int(losses[0][0]) == 6, report
    assert re.search(r"accuracy \d+\.\d+% ± \d+\.\d+% \(10 folds\), AUC 0\.\d{4}", report), report
    assert "exported/model.onnx" in report and "INT8 vs float32" in report
