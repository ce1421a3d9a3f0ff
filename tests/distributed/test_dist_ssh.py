"""The ssh starter end to end: real jobs over a stand-in ssh whose hosts are network namespaces.

``standins/ssh.py`` parses ssh's options like OpenSSH and runs the one remote command line through the
login shell inside the namespace named like the host, with a fresh login environment and sshd's teardown
semantics (killing the client does not kill the remote). The launcher runs inside the first namespace,
from a working directory whose name has a space and a non-ASCII character, and the worker's arguments
have both too, so every quoting layer (our ``shlex.quote``, the remote shell, ``env``) is exercised.
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from standins import install

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "dist_step_worker.py")
PROBE = os.path.join(HERE, "env_probe.py")
ODD_VALUE = "a b 'c' ü $HOME"   # forwarded verbatim: no word splitting, no expansion on the remote side


def _leftovers(workdir):
    """Live processes whose working directory is ``workdir`` (every remote process of these jobs)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") != workdir:
                continue
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found.append((int(pid), f.read().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue
    return found


@pytest.fixture
def ssh_site(tmp_path, two_hosts):
    """Stand-in ssh first on PATH, an odd working directory; kills (by pid) anything a failed test left."""
    names, addrs, hostfile = two_hosts
    workdir = tmp_path / "wörk dir"
    workdir.mkdir()
    bin_dir = install(tmp_path / "bin", ["ssh"], "--standin-log", tmp_path / "ssh.log")
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"], GLUONFACE_PROBE_VALUE=ODD_VALUE,
               GF_NOT_FORWARDED="1")
    yield names, hostfile, str(workdir), env
    for pid, _ in _leftovers(str(workdir)) + _leftovers(str(tmp_path)):
        os.kill(pid, signal.SIGKILL)


def _launch_argv(names, hostfile, engine, worker_args, *, logs, starter="ssh"):
    inner = [sys.executable, PROBE, "--probe", "probes", "--", sys.executable, WORKER, *worker_args]
    return ["ip", "netns", "exec", names[0], sys.executable, "-m", "gluonface", "launch", "-",
            "--engine", engine, "--workers", "2", "--hosts", str(hostfile), "--starter", starter,
            "--interface", "gfnet0", "--timeout", "150", "--log-dir", str(logs),
            "--exec", " ".join(shlex.quote(a) for a in inner)]


def _probes(workdir):
    out = {}
    for name in os.listdir(os.path.join(workdir, "probes")):
        if name.endswith(".json") and not name.startswith("."):
            with open(os.path.join(workdir, "probes", name), encoding="utf-8") as f:
                record = json.load(f)
            out[record["env"]["GLUONFACE_WORKER_INDEX" if "DMLC_ROLE" in record["env"] else "HOROVOD_RANK"]] = record
    return out


@pytest.mark.parametrize("engine", ["kvstore", "horovod"])
def test_two_host_job_over_ssh(tmp_path, ssh_site, engine):
    names, hostfile, workdir, env = ssh_site
    out = "out ü"   # relative: only right if the remote `cd` into the working directory happened
    argv = _launch_argv(names, hostfile, engine, ["--out", out, "--engine", engine, "--steps", "4"],
                        logs=tmp_path / "logs")
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"{engine} over ssh: {time.monotonic() - t0:.1f} s")
    table = json.loads((tmp_path / "logs" / "processes.json").read_text())
    assert table["worker-0"]["host"] == names[0] and table["worker-1"]["host"] == names[1]
    assert all(info["job"] == table["worker-0"]["job"] for info in table.values())

    probes = _probes(workdir)
    assert sorted(probes) == ["0", "1"]
    for index, record in probes.items():
        assert record["argv"] == [sys.executable, WORKER, "--out", out, "--engine", engine, "--steps", "4"]
        assert record["cwd"] == workdir
        assert record["hostname"] == names[int(index)]          # really ran on that host
        e = record["env"]
        assert e["GLUONFACE_PROBE_VALUE"] == ODD_VALUE          # forwarded prefix, quoted intact
        assert "GF_NOT_FORWARDED" not in e                      # sshd passes nothing else of ours
        assert e["GLUONFACE_JOB"] == table["worker-0"]["job"]
        assert e["OMP_NUM_THREADS"] == env.get("OMP_NUM_THREADS", "1") and "SSH_CONNECTION" in e
    with np.load(os.path.join(workdir, out, "rank0.npz")) as a, np.load(os.path.join(workdir, out, "rank1.npz")) as b:
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7)
    with open(os.path.join(workdir, out, "rank0.json")) as f:
        result = json.load(f)
    assert result["size"] == 2 and result["eval_after"] < result["eval_before"]
    assert _leftovers(workdir) == []
    calls = _ssh_calls(tmp_path)
    for host in names:   # pre-flight (versions, a multi-line script) and the job itself went over ssh
        assert any(c["host"] == host and "importlib.metadata" in c["command"] for c in calls)
        assert any(c["host"] == host and "exec env" in c["command"] for c in calls)


def _ssh_calls(tmp_path):
    with open(tmp_path / "ssh.log", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _wait_for(predicate, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.parametrize("engine,how", [("kvstore", "remote worker SIGKILL"), ("kvstore", "local ssh client SIGKILL"),
                                        ("horovod", "remote worker SIGKILL")])
def test_dead_worker_stops_every_remote_process(tmp_path, ssh_site, engine, how):
    """ps-lite never notices a dead worker (the others block forever), Horovod's survivors fail; either way
    the launcher must stop every remote process, although killing an ssh client stops none."""
    names, hostfile, workdir, env = ssh_site
    steps = ["--steps", "100000"] if how.startswith("local") else ["--steps", "100000", "--die-at", "3"]
    argv = _launch_argv(names, hostfile, engine, ["--out", "out", "--engine", engine, *steps],
                        logs=tmp_path / "logs")
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        probes = os.path.join(workdir, "probes")
        assert _wait_for(lambda: os.path.isdir(probes) and len(os.listdir(probes)) >= 2, 120, proc), \
            "the workers never started"
        started = time.monotonic()
        if how.startswith("local"):
            time.sleep(3)   # let the workers connect to the servers
            table = json.loads((tmp_path / "logs" / "processes.json").read_text())
            os.kill(table["worker-1"]["pid"], signal.SIGKILL)   # the ssh client; its remote worker lives on
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode not in (0, 124), err[-3000:]
    assert "died" in err and "worker-" in err, err[-3000:]
    assert time.monotonic() - started < 60
    assert _leftovers(workdir) == []


@pytest.mark.parametrize("tty", [False, True])
def test_standin_ssh_client_death_leaves_the_remote_running_unless_it_has_a_terminal(ssh_site, tty):
    """The property the teardown test relies on, checked on the stand-in itself (as with OpenSSH)."""
    names, _, workdir, env = ssh_site
    remote = f"cd {shlex.quote(workdir)} && exec sleep 60"
    client = subprocess.Popen(["ssh", *(["-tt"] if tty else []), "-o", "BatchMode=yes", names[1], remote],
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert _wait_for(lambda: len(_leftovers(workdir)) == 1, 30, client)
        client.kill()
        client.wait()
        time.sleep(1)
        assert len(_leftovers(workdir)) == (0 if tty else 1)   # a pty hangs up (SIGHUP); pipes do not
    finally:
        client.kill()
        client.wait()


def test_elastic_horovod_over_horovodruns_own_ssh(tmp_path, ssh_site):
    """--elastic runs horovodrun, which reaches the second host with its own ssh command line (options after
    the host, one quoted remote command); a worker there dies and the survivor finishes alone."""
    names, hostfile, _, env = ssh_site
    out = tmp_path / "out"
    worker = [sys.executable, os.path.join(HERE, "elastic_worker.py"), "--out", str(out), "--steps", "60",
              "--commit-every", "10", "--die-at", "25"]
    # horovodrun's remote `cd` does not quote the directory (horovod/runner/gloo_run.py), so no odd cwd here
    argv = ["ip", "netns", "exec", names[0], sys.executable, "-m", "gluonface", "launch", "-", "--engine",
            "horovod", "--elastic", "--workers", "2", "--min-workers", "1", "--hosts", str(hostfile),
            "--interface", "gfnet0", "--timeout", "150", "--log-dir", str(tmp_path / "logs"),
            "--exec", " ".join(shlex.quote(a) for a in worker)]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out / "result.json") as f:
        result = json.load(f)
    assert result["step"] == 60 and result["sizes"] == [2, 1] and result["final_size"] == 1
    remote = [c for c in _ssh_calls(tmp_path) if "elastic_worker.py" in c["command"]]
    assert [c["host"] for c in remote] == [names[1]]   # the first host is local to horovodrun, no ssh
    assert remote[0]["argv"][:5] == ["-o", "PasswordAuthentication=no", "-o", "StrictHostKeyChecking=no", names[1]]
    assert _leftovers(str(tmp_path)) == []
