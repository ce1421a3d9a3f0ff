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
    res = subprocess.run([sys.executable, "-m", "gluonface", "doctor", "--quick", "--run-dir", os.getcwd()],
                         capture_output=True, text=True)
    assert res.returncode in (0, 1)
    assert "mxnet" in res.stdout and "result:" in res.stdout
    for row in ("CPU", "fp32 train", "bf16 train", "bf16 infer", "INT8 infer"):
        assert f"] {row} " in res.stdout, row
    assert res.returncode == (1 if "[FAIL]" in res.stdout else 0)


def test_compute_paths_are_judged_by_their_numbers():
    from gluonface.machine import RELEVANT_FLAGS, cpu_facts
    facts = doctor.probe(".", paths=True)
    assert set(facts["cpu"]["flags"]) <= set(RELEVANT_FLAGS) and facts["cpu"] == cpu_facts()
    paths = facts["paths"]
    assert paths["fp32 train"]["status"] == "ok" and "float64" in paths["fp32 train"]["detail"]
    assert paths["bf16 train"]["status"] == "off" and "refused" in paths["bf16 train"]["detail"]
    from gluonface.precision import lowp_supported
    assert (paths["bf16 infer"]["status"] == "ok") == lowp_supported("bf16")
    assert paths["INT8 infer"]["status"] == "ok", paths["INT8 infer"]   # the CPU wheel has oneDNN INT8
    rows = _by_name(doctor.checks(facts))
    assert rows["bf16 train"].status == "off" and "float32" in rows["bf16 train"].fix
    broken = dict(facts, paths=dict(paths, **{"forward mobilefacenet": {"status": "fail",
                                                                        "detail": "crashed: killed by signal 11"}}))
    row = _by_name(doctor.checks(broken))["forward mobilefacenet"]
    assert row.status == "fail" and "signal 11" in row.detail and row.fix


def test_backbone_check_survives_a_failing_child_and_goes_on():
    from gluonface.machine import backbone_checks
    got = backbone_checks(["no_such_backbone", "iresnet_tiny"])
    assert got["iresnet_tiny"] == (True, "forward + backward, batch 2")
    ok, detail = got["no_such_backbone"]
    assert not ok and "crashed" in detail and "unknown model" in detail
