"""A failing worker of a multi-process job reports and leaves at once; the test-only fault switch."""
import json
import subprocess
import sys

import pytest

from gluonface.parallel.context import DistContext
from gluonface.parallel.failure import leave_on_failure
from gluonface.parallel.fault_switch import FaultSwitch, InjectedFault
from gluonface.parallel.heartbeat import MARKER
from gluonface.errors import GluonFaceError


def test_fault_switch_reads_its_spec():
    sw = FaultSwitch.parse("raise,step=5,rank=1")
    sw.fire(5, 0)
    sw.fire(4, 1)
    with pytest.raises(InjectedFault, match="step 5 on rank 1"):
        sw.fire(5, 1)
    with pytest.raises(InjectedFault):
        FaultSwitch.parse("raise,step=2").fire(2, 7)
    for bad in ("explode,step=1", "raise", "raise,step=x", "raise,when=3"):
        with pytest.raises(GluonFaceError, match="GLUONFACE_TEST_FAULT"):
            FaultSwitch.parse(bad)
    assert FaultSwitch.from_env({}) is None


def test_a_single_process_run_raises_as_usual():
    with pytest.raises(RuntimeError, match="boom"):
        with leave_on_failure(DistContext(engine="local")):
            raise RuntimeError("boom")


@pytest.mark.parametrize("exc,code,shown", [("GluonFaceError('bad rec; fix: repack')", 2, "error: bad rec"),
                                            ("RuntimeError('loader died')", 1, "RuntimeError: loader died")])
def test_a_dist_worker_reports_and_exits_without_interpreter_shutdown(exc, code, shown):
    """``atexit`` handlers (where ps-lite's exit barrier would wait for peers) never run."""
    script = ("import atexit, os\n"
              "from gluonface.parallel.context import DistContext\n"
              "from gluonface.parallel.failure import leave_on_failure\n"
              "from gluonface.parallel.heartbeat import start_heartbeat\n"
              "from gluonface.errors import GluonFaceError\n"
              "atexit.register(lambda: print('SHUTDOWN RAN', flush=True))\n"
              "hb = start_heartbeat()\n"
              "with leave_on_failure(DistContext(engine='kvstore', num_workers=2), hb):\n"
              f"    raise {exc}\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"GLUONFACE_HEARTBEAT": "30", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == code
    assert shown in proc.stderr and "SHUTDOWN RAN" not in proc.stdout
    beats = [json.loads(line.split(MARKER, 1)[1]) for line in proc.stderr.splitlines() if MARKER in line]
    assert beats[-1]["phase"] == "failed"
    assert beats[-1]["error"].startswith(shown.replace("error: ", "GluonFaceError: "))
