"""The ssh starter end to end over real OpenSSH: an sshd in each network-namespace host (real_sshd.py).

The launcher runs on the first host, from a working directory whose name has a space and a non-ASCII
character, and the worker's arguments have both too, so every quoting layer (our ``shlex.quote``, the
remote login shell, ``env``) is exercised; the workers report what they received (env_probe.py).
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

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.sshd]
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
def site(tmp_path, ssh_hosts):
    """Real sshd hosts, an odd working directory, and the user's environment (LANG is passed by sshd itself)."""
    workdir = tmp_path / "wörk dir"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}   # pytest may itself run over ssh
    env.update(GLUONFACE_PROBE_VALUE=ODD_VALUE, GF_NOT_FORWARDED="1", LANG="C.UTF-8")
    yield ssh_hosts, str(workdir), env


def _launch_argv(hosts, engine, worker_args, *, logs):
    inner = [sys.executable, PROBE, "--probe", "probes", "--", sys.executable, WORKER, *worker_args]
    return hosts.on(0, [sys.executable, "-m", "gluonface", "launch", "-", "--engine", engine, "--workers", "2",
                        "--hosts", hosts.hostfile, "--interface", "gfnet0", "--timeout", "150", "--log-dir",
                        str(logs), "--exec", " ".join(shlex.quote(a) for a in inner)])


def _probes(workdir):
    out = {}
    for name in os.listdir(os.path.join(workdir, "probes")):
        if name.endswith(".json") and not name.startswith("."):
            with open(os.path.join(workdir, "probes", name), encoding="utf-8") as f:
                record = json.load(f)
            out[record["env"]["GLUONFACE_WORKER_INDEX" if "DMLC_ROLE" in record["env"] else "HOROVOD_RANK"]] = record
    return out


@pytest.mark.parametrize("engine", ["kvstore", "horovod"])
def test_two_host_job_over_ssh(tmp_path, site, engine):
    hosts, workdir, env = site
    out = "out ü"   # relative: only right if the remote `cd` into the working directory happened
    argv = _launch_argv(hosts, engine, ["--out", out, "--engine", engine, "--steps", "4"], logs=tmp_path / "logs")
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"{engine} over real ssh: {time.monotonic() - t0:.1f} s")
    table = json.loads((tmp_path / "logs" / "processes.json").read_text())
    assert table["worker-0"]["host"] == hosts.names[0] and table["worker-1"]["host"] == hosts.names[1]
    assert all(info["job"] == table["worker-0"]["job"] for info in table.values())

    probes = _probes(workdir)
    assert sorted(probes) == ["0", "1"]
    for index, record in probes.items():
        assert record["argv"] == [sys.executable, WORKER, "--out", out, "--engine", engine, "--steps", "4"]
        assert record["cwd"] == workdir
        assert record["hostname"] == hosts.names[int(index)]     # really ran on that host
        e = record["env"]
        assert e["SSH_CONNECTION"].split()[2] == hosts.addrs[int(index)]   # ... through its sshd
        assert e["GLUONFACE_PROBE_VALUE"] == ODD_VALUE          # forwarded prefix, quoted intact
        assert "GF_NOT_FORWARDED" not in e                      # sshd passes nothing else of ours ...
        assert e["LANG"] == "C.UTF-8"                           # ... but LANG (SendEnv/AcceptEnv LANG LC_*)
        assert e["GLUONFACE_JOB"] == table["worker-0"]["job"]
        assert e["OMP_NUM_THREADS"] == env.get("OMP_NUM_THREADS", "1")
    with np.load(os.path.join(workdir, out, "rank0.npz")) as a, np.load(os.path.join(workdir, out, "rank1.npz")) as b:
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7)
    with open(os.path.join(workdir, out, "rank0.json")) as f:
        result = json.load(f)
    assert result["size"] == 2 and result["eval_after"] < result["eval_before"]
    assert _leftovers(workdir) == []
    for i in range(2):   # the pre-flight's version check and the worker: two sessions on each host
        assert hosts.sessions(i) >= 2, hosts.sshd_log(i)[-2000:]


def _wait_for(predicate, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _start_long_job(tmp_path, site, engine, *worker_args):
    """Start a job that would run for hours; returns (launcher Popen, logs dir) once both workers run."""
    hosts, workdir, env = site
    argv = _launch_argv(hosts, engine, ["--out", "out", "--engine", engine, "--steps", "100000", *worker_args],
                        logs=tmp_path / "logs")
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probes = os.path.join(workdir, "probes")
    if not _wait_for(lambda: os.path.isdir(probes) and len(os.listdir(probes)) >= 2, 120, proc):
        proc.kill()
        raise AssertionError("the workers never started:\n" + proc.communicate()[1][-3000:])
    return proc


def _finish(proc, timeout=90):
    try:
        return proc.communicate(timeout=timeout)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("engine,how", [("kvstore", "remote worker SIGKILL"), ("kvstore", "local ssh client SIGKILL"),
                                        ("horovod", "remote worker SIGKILL")])
def test_dead_worker_stops_every_remote_process(tmp_path, site, engine, how):
    """ps-lite never notices a dead worker (the others block forever), Horovod's survivors fail; either way
    the launcher must stop every remote process, although killing an ssh client stops none."""
    _, workdir, _ = site
    proc = _start_long_job(tmp_path, site, engine, *([] if how.startswith("local") else ["--die-at", "3"]))
    started = time.monotonic()
    if how.startswith("local"):
        time.sleep(3)   # let the workers connect to the servers
        table = json.loads((tmp_path / "logs" / "processes.json").read_text())
        os.kill(table["worker-1"]["pid"], signal.SIGKILL)   # the ssh client; its remote worker lives on
    err = _finish(proc)
    assert proc.returncode not in (0, 124), err[-3000:]
    assert "died" in err and "worker-" in err, err[-3000:]
    assert time.monotonic() - started < 60
    assert _leftovers(workdir) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_launcher_stops_every_remote_process(tmp_path, site, sig):
    """Ctrl-C or SIGTERM to the launcher of a kvstore job (whose processes never end by themselves)."""
    _, workdir, _ = site
    proc = _start_long_job(tmp_path, site, "kvstore")
    time.sleep(2)
    proc.send_signal(sig)   # ip netns exec, unshare and sh exec in place: this is the launcher's pid
    t0 = time.monotonic()
    err = _finish(proc, timeout=60)
    print(f"{sig.name}: launcher ended after {time.monotonic() - t0:.1f} s")
    assert proc.returncode != 0, err[-3000:]
    assert _leftovers(workdir) == [], err[-3000:]


@pytest.mark.parametrize("tty", [False, True])
def test_openssh_client_death_leaves_the_remote_running_unless_it_has_a_terminal(site, tty):
    """The OpenSSH behaviour the launcher's remote teardown exists for: without a terminal, killing the
    client does not stop the remote command (sshd sends it no signal); with one (-tt), it is hung up."""
    hosts, workdir, env = site
    remote = f"cd {shlex.quote(workdir)} && exec sleep 60"
    client = subprocess.Popen(hosts.on(0, ["ssh", *(["-tt"] if tty else []), "-o", "BatchMode=yes", hosts.names[1],
                                           remote]), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              start_new_session=True)
    try:
        assert _wait_for(lambda: len(_leftovers(workdir)) == 1, 30, client)
        client.kill()
        client.wait()
        deadline = time.monotonic() + 5
        while _leftovers(workdir) and tty and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        assert len(_leftovers(workdir)) == (0 if tty else 1)
    finally:
        client.kill()
        client.wait()
        for pid, _ in _leftovers(workdir):
            os.kill(pid, signal.SIGKILL)


def test_elastic_horovod_over_horovodruns_own_ssh(tmp_path, site):
    """--elastic runs horovodrun, which reaches the second host with its own ssh command line; the worker
    there dies and the survivor (local to horovodrun) finishes alone."""
    hosts, _, env = site
    out, probes = tmp_path / "out", tmp_path / "probes"
    worker = [sys.executable, PROBE, "--probe", str(probes), "--", sys.executable,
              os.path.join(HERE, "elastic_worker.py"), "--out", str(out), "--steps", "60", "--commit-every", "10",
              "--die-at", "25"]
    # horovodrun's remote `cd` does not quote the directory (horovod/runner/gloo_run.py), so no odd cwd here
    argv = hosts.on(0, [sys.executable, "-m", "gluonface", "launch", "-", "--engine", "horovod", "--elastic",
                        "--workers", "2", "--min-workers", "1", "--hosts", hosts.hostfile, "--interface", "gfnet0",
                        "--timeout", "150", "--log-dir", str(tmp_path / "logs"),
                        "--exec", " ".join(shlex.quote(a) for a in worker)])
    sessions_before = hosts.sessions(1)   # the pre-flight's
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out / "result.json") as f:
        result = json.load(f)
    assert result["step"] == 60 and result["sizes"] == [2, 1] and result["final_size"] == 1
    records = [json.loads(p.read_text()) for p in probes.glob("[0-9]*.json")]
    assert sorted(r["hostname"] for r in records) == hosts.names
    for record in records:   # the second host's worker came through its sshd, the first host's did not
        via_ssh = record["env"].get("SSH_CONNECTION", "").split()[2:3]
        assert via_ssh == ([hosts.addrs[1]] if record["hostname"] == hosts.names[1] else [])
    assert hosts.sessions(1) > sessions_before
    assert _leftovers(str(tmp_path)) == []


def test_doctor_probes_every_host_over_ssh(tmp_path, site):
    """``gluonface doctor --hosts`` runs ``doctor --json`` on each host through sshd and compares versions;
    a host where the remote python is missing is reported unreachable with its fix."""
    hosts, _, env = site
    argv = [sys.executable, "-m", "gluonface", "doctor", "--quick", "--run-dir", str(tmp_path),
            "--hosts", hosts.hostfile]
    ok = subprocess.run(hosts.on(0, argv + ["--remote-python", sys.executable]), env=env, capture_output=True,
                        text=True, timeout=200)
    assert "Traceback" not in ok.stderr, ok.stderr[-3000:]
    for name in hosts.names:
        assert f"host {name}\n" in ok.stdout and "reachable" not in ok.stdout, ok.stdout[-3000:]
    assert "[ok  ] same gluonface" in ok.stdout and "[ok  ] same mxnet" in ok.stdout, ok.stdout[-3000:]
    assert all(hosts.sessions(i) == 1 for i in range(2))
    bad = subprocess.run(hosts.on(0, argv + ["--remote-python", "/nonexistent/python"]), env=env,
                         capture_output=True, text=True, timeout=200)
    assert bad.returncode == 1 and bad.stdout.count("[FAIL] reachable") == 2, bad.stdout[-3000:]
    assert f"check `ssh {hosts.names[1]}` works" in bad.stdout
