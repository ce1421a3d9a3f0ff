"""The fault matrix across hosts: faults whose handling involves more than one host, over the ssh starter.

Two network namespaces per cell are the hosts (netns_hosts.py), each running a real OpenSSH sshd
(real_sshd.py, as conftest's ``ssh_hosts``): a remote process outlives its killed ssh client there. Cells run
two at a time (``fault_cells.Batches``), each with its own pair of hosts. The launcher runs inside the
first namespace; the victim runs on the second. What is checked beyond the local matrix: the heartbeat of a
remote process arrives over ssh (a stopped remote worker is a stall), a remote failure's reason is relayed,
teardown reaches every process on both hosts (found afterwards by the job tag), and when the launcher
itself is killed the remote processes leave by themselves (the heartbeat's dead-man switch through ssh).
"""
import os
import re
import signal
import time

import pytest

import fault_cells as fc
import real_sshd
from gluonface.engine.checkpoint import load_backbone
from netns_hosts import linked_namespaces

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.sshd]

STALL_TIMEOUT = 8
CELLS = [("kvstore", "kill-worker"), ("kvstore", "stop-worker"), ("kvstore", "kill-launcher"),
         ("horovod", "raise"), ("horovod", "kill-loader"), ("elastic", "kill-worker")]


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return fc.write_rec(tmp_path_factory.mktemp("faulthostdata") / "train")


def _remote_worker(tag, engine, host):
    for pid, info in fc.workers(tag).items():
        env = info["env"]
        if env.get("HOROVOD_HOSTNAME") == host if engine == "elastic" else \
                env.get("GLUONFACE_WORKER_INDEX", env.get("HOROVOD_RANK")) == "1":
            return pid
    return None


def run_cell(cell, rec, root, index):
    """Two fresh hosts with a real sshd each, one job, one fault on the second host; returns the evidence
    ``test_fault_across_hosts`` asserts on."""
    engine, fault = cell
    tag = f"{os.getpid() % 10000}{index:02d}"
    names = [f"gf{tag}n1", f"gf{tag}n2"]
    with linked_namespaces(names, tag) as addrs:
        (root / "sshd").mkdir()
        with real_sshd.sshd_hosts(names, addrs, root / "sshd") as hosts:
            return _run(engine, fault, rec, root, hosts)


def _run(engine, fault, rec, root, hosts):
    names = hosts.names
    cfg = fc.write_config(root / "cfg.yaml", rec)
    run_dir, logs = str(root / "run"), root / "logs"
    extra = ["--hosts", hosts.hostfile, "--interface", "gfnet0"]
    if fault == "stop-worker":
        extra += ["--stall-timeout", str(STALL_TIMEOUT)]
    if engine == "elastic":
        extra += ["--set", "train.max_steps=16"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}   # pytest may itself run over ssh
    env["LANG"] = "C.UTF-8"
    if fault == "raise":
        env["GLUONFACE_TEST_FAULT"] = "raise,step=5,rank=1"
    argv = hosts.on(0, fc.launcher_argv(cfg, engine, run_dir, logs, *extra))
    job, crashes = fc.start_until_checkpoint(lambda attempt: fc.Job(argv, logs=logs, run_dir=run_dir, env=env,
                                                                    cwd=str(root)), run_dir)
    ev = {"names": names, "bound": 60 + (STALL_TIMEOUT if fault == "stop-worker" else 0), "start_crashes": crashes}
    try:
        tag = job.tag
        victim = job.wait_for(lambda: _remote_worker(tag, engine, names[1]), 30, "the remote worker")
        ev["over_ssh"] = bool(fc.tagged(tag)[victim]["env"].get("SSH_CONNECTION"))
        t_fault = time.time()
        if fault == "kill-worker":
            os.kill(victim, signal.SIGKILL)
        elif fault == "stop-worker":
            os.kill(victim, signal.SIGSTOP)
        elif fault == "kill-loader":
            os.kill(job.wait_for(lambda: fc.children(victim), 30, "a loader child")[0], signal.SIGKILL)
        elif fault == "kill-launcher":
            os.kill(job.proc.pid, signal.SIGKILL)
        ev["code"] = job.finish(timeout=ev["bound"] + 60)
        t_end, ev["out"] = time.time(), job.output()
        if fault == "raise":
            found = re.search(r"injected test fault at step 5 on rank 1 at ([0-9.]+)", ev["out"])
            assert found, ev["out"][-4000:]
            t_fault = float(found.group(1))
        ev["left"] = fc.leftovers(tag, wait=60 if fault == "kill-launcher" else 2)
        ev["seconds"] = (time.time() if fault == "kill-launcher" else t_end) - t_fault
        fc.report(f"{engine} / {fault}", host="2 hosts (ssh)", exit=ev["code"], seconds=round(ev["seconds"], 1),
                  outcome=fc.outcome(engine == "elastic", ev["code"], ev["out"]), start_crashes=crashes)
        try:
            ev["loaded_step"] = load_backbone(run_dir, "latest")[1]["step"]
        except Exception as exc:   # asserted in the test
            ev["loaded_step"] = exc
        if engine == "elastic" and ev["code"] != 0:   # the known native crash of a survivor: resume must finish
            again = fc.Job(hosts.on(0, fc.launcher_argv(cfg, engine, run_dir, root / "logs-resume", *extra,
                                                        "--resume", "auto")), logs=root / "logs-resume",
                           run_dir=run_dir, env=env, cwd=str(root))
            try:
                ev["resume"] = (again.finish(timeout=200), again.output(), fc.latest_step(run_dir))
            finally:
                again.kill()
        return ev
    finally:
        job.kill()


@pytest.fixture(scope="module")
def matrix(request, rec, tmp_path_factory):
    missing = real_sshd.missing()
    if missing:   # as conftest's ssh_hosts: a user's machine skips, CI (which installs OpenSSH) fails
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(missing)

    def run(cell):
        return run_cell(cell, rec, tmp_path_factory.mktemp(f"{cell[0]}-{cell[1]}"), CELLS.index(cell))
    return fc.Batches(request, "test_fault_across_hosts", lambda p: (p["engine"], p["fault"]), lambda cell: "all",
                      run, lambda cell: STALL_TIMEOUT if cell[1] == "stop-worker" else 0)


@pytest.mark.parametrize("engine,fault", CELLS, ids=[f"{e}-{f}" for e, f in CELLS])
def test_fault_across_hosts(matrix, engine, fault):
    ev = matrix.result((engine, fault))
    assert ev["over_ssh"], "the victim did not come over ssh"
    assert ev["left"] == {}, ev["left"]
    _check(engine, fault, ev["code"], ev["out"], ev["names"], ev.get("resume"))
    assert ev["seconds"] <= ev["bound"], f"{ev['seconds']:.1f} s from the fault to the end"
    assert not isinstance(ev["loaded_step"], Exception), ev["loaded_step"]
    assert ev["loaded_step"] >= fc.CHECKPOINT_EVERY


def _check(engine, fault, code, out, names, resume=None):
    remote = rf"\(worker on {names[1]}, pid \d+\)"
    if fault == "kill-worker" and engine == "elastic":
        if code != 0:   # see test_dist_faults.py: the documented native crash, then resume finishes
            assert fc.NATIVE_CRASH.search(out) and resume and resume[0] == 0 and resume[2] == 16, out[-4000:]
            return
        assert code == 0, out[-4000:]
    elif fault == "kill-worker":
        # ssh reports a remote death by a signal as its own exit status 255 (the launcher exits 1 for it)
        assert code == 1 and re.search(rf"process worker-1 {remote} died: exit code 255", out), out[-4000:]
    elif fault == "stop-worker":
        assert code == 124 and re.search(rf"process worker-1 {remote} stalled: no heartbeat", out), out[-4000:]
    elif fault == "kill-launcher":
        assert code == -signal.SIGKILL
    elif fault == "raise":
        assert code == 1 and re.search(rf"process worker-1 {remote} died: exit code 1 \(InjectedFault: ", out), \
            out[-4000:]
    elif fault == "kill-loader":
        assert code == 1 and re.search(rf"process worker-1 {remote} died: exit code 1 \(RuntimeError: 1 loader "
                                       r"worker\(s\) died", out), out[-4000:]
