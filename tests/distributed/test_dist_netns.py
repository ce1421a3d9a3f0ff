"""Multi-host jobs: two "hosts" as Linux network namespaces joined by a veth pair, for both engines.

The launcher itself runs inside the first namespace (as it would on the first host) with a hostfile naming
both namespaces and the netns starter; no address is configured in the root namespace. Each namespace gets
an ``/etc/netns/<ns>/hosts`` that maps this machine's host name to the namespace's address (Horovod 0.28.1
binds one Gloo context to whatever the host name resolves to). Everything is removed afterwards.
"""
import os
import random
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
WORKER = os.path.join(os.path.dirname(__file__), "dist_step_worker.py")


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts(tmp_path):
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2 (ip); not available here")
    tag = f"{os.getpid() % 10000}{random.randint(0, 99)}"
    names = [f"gf{tag}a", f"gf{tag}b"]
    subnet = f"10.231.{random.randint(1, 250)}"
    addrs = [f"{subnet}.1", f"{subnet}.2"]
    created = []
    try:
        for ns in names:
            if _ip("netns", "add", ns).returncode != 0:
                pytest.skip(f"cannot create network namespace {ns} here: {_ip('netns', 'add', ns).stderr}")
            created.append(ns)
        v0, v1 = f"v{tag}a", f"v{tag}b"
        steps = [("link", "add", v0, "type", "veth", "peer", "name", v1),
                 ("link", "set", v0, "netns", names[0]), ("link", "set", v1, "netns", names[1])]
        for ns, veth, addr in zip(names, (v0, v1), addrs):
            steps += [("-n", ns, "link", "set", veth, "name", "gfnet0"),
                      ("-n", ns, "addr", "add", f"{addr}/24", "dev", "gfnet0"),
                      ("-n", ns, "link", "set", "lo", "up"), ("-n", ns, "link", "set", "gfnet0", "up")]
        for step in steps:
            res = _ip(*step)
            if res.returncode != 0:
                pytest.skip(f"cannot set up veth networking ({' '.join(step)}): {res.stderr.strip()}")
        for ns, addr in zip(names, addrs):
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/hosts", "w") as f:
                f.write(f"127.0.0.1 localhost\n{addr} {socket.gethostname()}\n")
        hostfile = tmp_path / "hosts"
        hostfile.write_text(f"{names[0]} slots=1 addr={addrs[0]}\n{names[1]} slots=1 addr={addrs[1]}\n")
        yield names, addrs, hostfile
    finally:
        for ns in created:
            _ip("netns", "del", ns)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


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
