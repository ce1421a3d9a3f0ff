"""Both engines, real processes: same parameters as one process on the same global batch; failures fail fast.

The job is tests/distributed/dist_step_worker.py (a few SGD+momentum steps of a tiny net with BatchNorm,
rank-dependent initial weights). The reference is one process with ctx=[cpu(0), cpu(1)] so BatchNorm sees
the same per-device batches as the two workers.
"""
import json
import os
import sys
import time

import numpy as np
import pytest

from gluonface.launch.job import LaunchRequest, launch

pytestmark = pytest.mark.distributed
WORKER = os.path.join(os.path.dirname(__file__), "dist_step_worker.py")


def _worker_cmd(out, *extra):
    return (sys.executable, WORKER, "--out", str(out)) + tuple(extra)


def _launch(tmp_path, engine, cmd, **kw):
    req = LaunchRequest(config="-", engine=engine, workers=2, command=cmd, log_dir=str(tmp_path / "logs"),
                        timeout=120, **kw)
    return launch(req, echo=None)


def _load(out, rank):
    with np.load(os.path.join(out, f"rank{rank}.npz")) as z:
        params = dict(z)
    with open(os.path.join(out, f"rank{rank}.json")) as f:
        return params, json.load(f)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    import subprocess
    out = tmp_path_factory.mktemp("ref")
    subprocess.run(_worker_cmd(out, "--devices", "cpu:2"), check=True, timeout=120)
    return _load(out, 0)


def _assert_same(out, reference, worker_losses_are_local=False):
    ref_params, ref_info = reference
    for rank in (0, 1):
        params, info = _load(out, rank)
        assert info["size"] == 2 and info["rank"] == rank
        assert set(params) == set(ref_params)
        for name, value in ref_params.items():
            np.testing.assert_allclose(params[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
        if not worker_losses_are_local:   # allreduce_mean is documented as local when servers optimise
            np.testing.assert_allclose(info["losses"], ref_info["losses"], rtol=1e-4)
    # the weights really moved: the test could not pass on untouched initial weights
    assert ref_info["losses"][0] != pytest.approx(ref_info["losses"][-1], rel=1e-3)


@pytest.mark.parametrize("kvstore,servers,on_servers", [
    ("dist_sync", 1, False),
    pytest.param("dist_device_sync", 2, False, marks=pytest.mark.slow),
    pytest.param("dist_sync", 1, True, marks=pytest.mark.slow)])
def test_kvstore_equals_single_process(tmp_path, reference, kvstore, servers, on_servers):
    extra = ("--engine", "kvstore", "--kvstore", kvstore) + (("--update-on-kvstore",) if on_servers else ())
    rc = _launch(tmp_path, "kvstore", _worker_cmd(tmp_path / "out", *extra), servers=servers, kvstore=kvstore)
    assert rc == 0, open(tmp_path / "logs" / "worker-0.log").read()[-3000:]
    _assert_same(tmp_path / "out", reference, worker_losses_are_local=on_servers)


def test_horovod_equals_single_process(tmp_path, reference):
    rc = _launch(tmp_path, "horovod", _worker_cmd(tmp_path / "out", "--engine", "horovod"))
    assert rc == 0, open(tmp_path / "logs" / "worker-0.log").read()[-3000:]
    _assert_same(tmp_path / "out", reference)


@pytest.mark.slow
def test_horovod_fp16_compression_close_to_reference(tmp_path, reference):
    rc = _launch(tmp_path, "horovod", _worker_cmd(tmp_path / "out", "--engine", "horovod",
                                                  "--compression", "fp16"))
    assert rc == 0
    ref_params, _ = reference
    params, _ = _load(tmp_path / "out", 1)
    for name, value in ref_params.items():   # fp16 on the wire: close, not bit-equal
        np.testing.assert_allclose(params[name], value, rtol=2e-2, atol=2e-3, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("kvstore,compression", [("dist_async", "none"), ("dist_sync", "2bit")])
def test_kvstore_async_and_2bit_train(tmp_path, kvstore, compression):
    cmd = _worker_cmd(tmp_path / "out", "--engine", "kvstore", "--kvstore", kvstore, "--steps", "30",
                      "--lr", "0.05", "--compression", compression)
    rc = _launch(tmp_path, "kvstore", cmd, kvstore=kvstore)
    assert rc == 0, open(tmp_path / "logs" / "worker-0.log").read()[-3000:]
    p0, info0 = _load(tmp_path / "out", 0)
    p1, _ = _load(tmp_path / "out", 1)
    # it learns the teacher's labels: held-out loss of the final weights well below the initial one
    assert info0["eval_after"] < 0.7 * info0["eval_before"], info0
    if kvstore == "dist_sync":   # replicas pull the same reduced (compressed) gradients
        for name in p0:
            np.testing.assert_allclose(p0[name], p1[name], rtol=1e-5, atol=1e-6)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:   # a zombie is gone for our purposes
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("engine", ["kvstore", "horovod"])
def test_killed_worker_stops_the_job(tmp_path, engine, capsys):
    cmd = _worker_cmd(tmp_path / "out", "--engine", engine, "--steps", "400", "--die-at", "3")
    start = time.monotonic()
    req = LaunchRequest(config="-", engine=engine, workers=2, command=cmd, log_dir=str(tmp_path / "logs"),
                        timeout=170)
    rc = launch(req, echo=sys.stderr)
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert rc != 0 and rc != 124, err[-2000:]   # not the hard timeout: the death itself was detected
    assert elapsed < 60
    assert "worker-" in err and "died" in err
    with open(tmp_path / "logs" / "processes.json") as f:
        pids = {name: info["pid"] for name, info in json.load(f).items()}
    assert [name for name, pid in pids.items() if _alive(pid)] == []
