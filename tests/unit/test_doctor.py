"""gluonface doctor: verdicts from facts and host comparison.

The ssh probe (`doctor --hosts`) runs over real sshd in tests/distributed/test_dist_ssh.py.
"""
import json
import os
import subprocess
import sys

from gluonface import doctor


def _facts(**over):
    facts = doctor.probe(".")
    facts.update(over)
    return facts


def _by_name(rows):
    return {c.name: c for c in rows}


def test_probe_reports_this_environment():
    facts = doctor.probe(".")
    import mxnet
    import numpy
    assert facts["mxnet"] == mxnet.__version__ and facts["numpy"] == numpy.__version__
    assert facts["features"]["DIST_KVSTORE"] is True
    assert json.loads(json.dumps(facts)) == facts


def test_numpy_too_new_fails_with_fix():
    rows = _by_name(doctor.checks(_facts(numpy="1.26.4")))
    assert rows["numpy"].status == "fail" and "<1.24" in rows["numpy"].fix


def test_missing_horovod_and_gluoncv_next_to_torch_name_fixes():
    rows = _by_name(doctor.checks(_facts(horovod=None, horovod_error="ImportError: x", gluoncv=None,
                                         gluoncv_error="ImportError: y", torch_installed=True)))
    assert rows["horovod"].status == "warn" and "HOROVOD_WITH_MXNET=1" in rows["horovod"].fix
    assert "torch" in rows["gluoncv"].fix


def test_gpu_on_cpu_build_and_low_disk_warn():
    f = _facts(gpus=2, free_gb=0.5)
    f["features"] = dict(f["features"], CUDA=False)
    rows = _by_name(doctor.checks(f))
    assert rows["mxnet CUDA"].status == "warn" and "mxnet-cu117" in rows["mxnet CUDA"].fix
    assert rows["disk"].status == "warn"


def test_compare_hosts_flags_mismatch_only():
    a = _facts()
    b = dict(a, mxnet="1.8.0")
    rows = _by_name(doctor.compare_hosts({"a": a, "b": b, "down": None}))
    assert rows["same mxnet"].status == "fail" and "b=1.8.0" in rows["same mxnet"].detail
    assert rows["same numpy"].status == "ok"


def test_cli_exit_status():
    res = subprocess.run([sys.executable, "-m", "gluonface", "doctor", "--run-dir", os.getcwd()],
                         capture_output=True, text=True)
    assert res.returncode in (0, 1)
    assert "mxnet" in res.stdout and "result:" in res.stdout
    assert res.returncode == (1 if "[FAIL]" in res.stdout else 0)
