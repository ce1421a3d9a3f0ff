"""tools/demo.py (first part of `make demo`): synth → pack → pairs → inspect through the CLI."""
import os
import subprocess
import sys

import cv2
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--out", str(out),
                          "--identities", "6", "--images-per-id", "4", "--pairs", "12"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    for stage in ("synth", "synth-holdout", "pack", "pairs", "inspect", "inspect-pairs"):
        assert f"-- {stage}: exit 0" in res.stdout
    assert "packed 24 images of 6 identities" in res.stdout
    assert "wrote 12 pairs (6 positive, 6 negative) from 4 identities" in res.stdout
    assert res.stdout.count("integrity: ok") == 2
    assert cv2.imread(str(out / "contact_sheet.png")) is not None
    assert cv2.imread(str(out / "pairs.png")) is not None
