"""Multi-host jobs: two "hosts" as Linux network namespaces joined by a veth pair, for both engines.

The launcher itself runs inside the first namespace (as it would on the first host) with a hostfile naming
both namespaces and the netns starter; no address is configured in the root namespace. The namespaces come
from the ``two_hosts`` fixture (conftest.py, netns_hosts.py); everything is removed afterwards.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
WORKER = os.path.join(os.path.dirname(__file__), "dist_step_worker.py")


@pytest.mark.parametrize("engine", ["kvstore", "horovod"])
def test_two_namespace_job(tmp_path, two_hosts, engine):
    names, addrs, hostfile = two_hosts
    out, logs = tmp_path / "out", tmp_path / "logs"
    argv = ["ip", "netns", "exec", names[0], sys.executable, "-m", "gluonface", "launch", "-",
            "--engine", engine, "--workers", "2", "--hosts", str(hostfile), "--starter", "netns",
            "--interface", "gfnet0", "--timeout", "150", "--log-dir", str(logs),
            "--exec", f"{sys.executable} {WORKER} --out {out} --engine {engine}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    table = json.loads((logs / "processes.json").read_text())
    assert table["worker-0"]["host"] == names[0] and table["worker-1"]["host"] == names[1]
    with np.load(out / "rank0.npz") as a, np.load(out / "rank1.npz") as b:
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7)
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, WORKER, "--out", str(ref), "--devices", "cpu:2"], check=True, timeout=120)
    with np.load(out / "rank1.npz") as a, np.load(ref / "rank0.npz") as r:
        for key in r.files:
            np.testing.assert_allclose(a[key], r[key], rtol=1e-4, atol=1e-5)
