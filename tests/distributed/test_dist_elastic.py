"""Elastic Horovod (gluonface.parallel.elastic + horovodrun discovery): a worker dies, the survivor finishes."""
import json
import os
import sys

import pytest

from gluonface.launch.elastic_run import discovery_lines
from gluonface.launch.hostfile import Host, local_hosts
from gluonface.launch.job import LaunchRequest, launch

WORKER = os.path.join(os.path.dirname(__file__), "elastic_worker.py")


def test_discovery_lines():
    assert discovery_lines(local_hosts(2), 2) == ["127.0.0.1:1", "localhost:1"]
    assert discovery_lines([Host("a", 2), Host("b", 4)], 6) == ["a:2", "b:4"]


@pytest.mark.distributed
@pytest.mark.slow
def test_survivor_rolls_back_and_finishes(tmp_path):
    out = tmp_path / "out"
    req = LaunchRequest(config="-", engine="horovod", workers=2, elastic=True, min_workers=1, timeout=240,
                        command=(sys.executable, WORKER, "--out", str(out), "--steps", "60", "--commit-every", "10",
                                 "--die-at", "25"), log_dir=str(tmp_path / "logs"))
    assert launch(req, echo=None) == 0
    with open(out / "result.json") as f:
        result = json.load(f)
    assert result["step"] == 60 and result["final_size"] == 1
    assert result["sizes"] == [2, 1]            # started with two workers, re-formed with the survivor
    # rolled back from step 25 to the commit at step 20 and redid those steps (not the whole run)
    assert 1 <= result["redone"] <= 10
    log = (tmp_path / "logs" / "horovodrun.log").read_text()
    assert "exit with status code 137" in log   # the SIGKILLed worker, seen by Horovod's driver
