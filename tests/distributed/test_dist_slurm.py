"""``gluonface launch --slurm FILE --submit`` end to end on a real SLURM cluster (real_slurm.py).

Two nodes, each a network namespace with its own munged and slurmd; slurmctld and the "login node" are the
first. The real ``sbatch`` queues the generated script, the real ``srun`` starts the tasks, and SLURM's own
records judge the outcome (``scontrol show job``: accounting storage is not configured, so ``sacct`` has
nothing; plus the ``jobcomp/filetxt`` log).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest

from netns_hosts import alive
from real_slurm import KILL_WAIT, job_processes
from test_dist_train_launch import _config, data  # noqa: F401  (data: the tiny rec fixture)

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.slurm]
HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "dist_step_worker.py")
PROBE = os.path.join(HERE, "env_probe.py")


@pytest.fixture
def site(slurm, tmp_path):
    """The cluster, and the environment of a user on its login node: the venv's ``python`` first on PATH
    (sbatch passes the submitter's environment to the job). Afterwards: no job of this test may be left."""
    env = slurm.env(dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])))
    assert set(slurm.node_states().values()) == {"idle"}, slurm.node_states()
    yield slurm, env
    left = slurm.client(["squeue", "-h", "-o", "%i %T"]).stdout.strip()
    if left:   # cancel them so that the module's next test starts on idle nodes, then report
        slurm.client(["scancel", "--full", *[line.split()[0] for line in left.splitlines()]])
        slurm.wait_job(int(left.split()[0]), KILL_WAIT + 30)
    assert not left, f"jobs left in the queue: {left}"


def _submit(slurm, env, cwd, *args):
    """``gluonface launch ... --slurm FILE --submit`` on the login node; returns the job id."""
    argv = [sys.executable, "-m", "gluonface", "launch", *args, "--workers", "2", "--slurm", str(cwd / "job.sbatch"),
            "--submit", "--timeout", "240"]
    proc = slurm.client(argv, env=env, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(re.search(r"Submitted batch job (\d+)", proc.stdout).group(1))


def _output(cwd, job_id):
    return next(cwd.glob(f"gluonface-*-{job_id}.out")).read_text(errors="replace")


def _ended(slurm, job_id, timeout):
    """Wait for the job's end (no longer listed by squeue, i.e. not even COMPLETING); returns its
    (scontrol record, jobcomp record)."""
    record = slurm.wait_job(job_id, timeout)
    deadline = time.monotonic() + KILL_WAIT + 20
    while time.monotonic() < deadline and (slurm.jobcomp(job_id) is None or slurm.client(
            ["squeue", "-h", "-j", str(job_id), "-o", "%T"]).stdout.strip()):
        time.sleep(0.2)
    return slurm.job(job_id), slurm.jobcomp(job_id)


def _left_behind(slurm, job_id):
    """Processes of the job still alive once SLURM says it ended, one line each (pid, command line)."""
    return "\n".join(f"{pid}: {_cmdline(pid)}" for pid in job_processes(job_id, slurm.name))


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
        return f"{cmd} [state {fields[0]} ppid {fields[1]} pgid {fields[2]} sid {fields[3]}]"
    except OSError:
        return "(gone)"


def _params(run_dir, name):
    ck = os.path.join(run_dir, "checkpoints")
    with open(os.path.join(ck, "latest")) as f:
        which = f.read().strip()
    return {k: v.asnumpy() for k, v in mx.nd.load(os.path.join(ck, which, name)).items()}


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory, data):  # noqa: F811
    """The same config trained by the local launcher (one machine, 2 workers), per engine, on demand."""
    runs = {}

    def get(engine):
        if engine not in runs:
            root = tmp_path_factory.mktemp(f"local-{engine}")
            cfg, run_dir = _config(root, data, steps=3), str(root / "run")
            proc = subprocess.run([sys.executable, "-m", "gluonface", "launch", cfg, "--engine", engine, "--workers",
                                   "2", "--set", f"train.run_dir={run_dir}", "--timeout", "240"],
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
            runs[engine] = run_dir
        return runs[engine]
    return get


# kvstore without --interface: nodes find their address from their host name; Horovod needs --interface
@pytest.mark.parametrize("engine,where", [("kvstore", []), ("horovod", ["--interface", "gfnet0"])])
def test_submit_trains_like_the_local_launcher(tmp_path, data, site, local_runs, engine, where):  # noqa: F811
    slurm, env = site
    cfg, run_dir = _config(tmp_path, data, steps=3), tmp_path / "run"
    t0 = time.monotonic()
    job_id = _submit(slurm, env, tmp_path, cfg, "--engine", engine, *where, "--set", f"train.run_dir={run_dir}")
    record, done = _ended(slurm, job_id, 240)
    print(f"{engine} via real sbatch: {time.monotonic() - t0:.1f} s")
    output = _output(tmp_path, job_id)
    assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), output[-4000:]
    assert done["JobState"] == "COMPLETED" and done["NodeList"] == record["NodeList"]
    left = _left_behind(slurm, job_id)
    assert not left, left

    for name in ("backbone.params", "classifier.params"):
        got, ref = _params(str(run_dir), name), _params(local_runs(engine), name)
        assert set(got) == set(ref)
        for key in ref:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-4, atol=1e-5, err_msg=key)
    with open(run_dir / "metrics.jsonl") as f:
        assert len([line for line in f if '"loss"' in line]) == 3

    nodes = slurm.nodes
    if engine == "kvstore":
        tasks = {int(t): (node, role, host) for t, node, role, host in
                 re.findall(r"slurm task (\d+) on (\S+): (\w+) \(DMLC_NODE_HOST=(\S+)\)", output)}
        assert [tasks[t][1] for t in range(4)] == ["scheduler", "server", "worker", "worker"], output[-3000:]
        assert tasks[0][0] == nodes[0]                      # the scheduler is where DMLC_PS_ROOT_URI points
        assert {tasks[2][0], tasks[3][0]} == set(nodes)     # one worker per node
        assert all(host == slurm.addrs[nodes.index(node)] for node, role, host in tasks.values() if role != "scheduler")
    else:
        logs = sorted((run_dir / "launch").iterdir())[-1]
        table = json.loads((logs / "processes.json").read_text())
        assert (table["worker-0"]["host"], table["worker-1"]["host"]) == tuple(nodes)


def _probe_job(slurm, env, tmp_path, engine, *worker_args):
    inner = [sys.executable, PROBE, "--probe", str(tmp_path / "probes"), "--", sys.executable, WORKER,
             "--out", str(tmp_path / "out"), "--engine", engine, *worker_args]
    return _submit(slurm, env, tmp_path, "-", "--engine", engine, "--interface", "gfnet0", "--exec", " ".join(inner))


def _wait_for_workers(slurm, job_id, tmp_path, timeout=120):
    probes = tmp_path / "probes"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probes.is_dir() and len(list(probes.glob("[0-9]*.json"))) >= 2:
            return [json.loads(p.read_text()) for p in probes.glob("[0-9]*.json")]
        assert slurm.job(job_id)["JobState"] in ("PENDING", "RUNNING"), _output(tmp_path, job_id)[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"the workers of job {job_id} never started:\n{_output(tmp_path, job_id)[-3000:]}")


@pytest.mark.parametrize("engine,what", [("kvstore", "task"), ("horovod", "task"), ("horovod", "srun")])
def test_a_killed_task_ends_the_whole_job(tmp_path, site, engine, what):
    """task: worker rank 1 SIGKILLs itself. kvstore: srun's --kill-on-bad-exit stops the step (ps-lite would
    hang); horovod: the launcher in the batch step stops the other srun steps. srun: the srun running worker 1
    of a Horovod job gets SIGKILL, its task lives on (like an ssh client's remote command) until the job
    ends. Either way the job fails and nothing is left."""
    slurm, env = site
    t0 = time.monotonic()
    die = ["--die-at", "3"] if what == "task" else []
    job_id = _probe_job(slurm, env, tmp_path, engine, "--steps", "100000", *die)
    if what == "srun":
        _wait_for_workers(slurm, job_id, tmp_path)
        table = json.loads(next(tmp_path.glob("launch-logs/*/processes.json")).read_text())
        os.kill(table["worker-1"]["pid"], signal.SIGKILL)
    record, done = _ended(slurm, job_id, 150)
    output = _output(tmp_path, job_id)
    print(f"{engine} via real sbatch, worker killed: {time.monotonic() - t0:.1f} s")
    assert record["JobState"] == "FAILED" and record["ExitCode"] != "0:0", output[-4000:]
    assert done["JobState"] == "FAILED"
    left = _left_behind(slurm, job_id)
    assert not left, left + '\n' + output[-4000:]
    if what == "srun":
        assert "process worker-1 (worker on" in output and "died: killed by SIGKILL" in output, output[-4000:]
    elif engine == "kvstore":
        assert re.search(r"srun: error: \S+: task \d+: Killed", output), output[-4000:]
    else:
        # srun reports its task's SIGKILL as exit status 128 + 9
        assert re.search(r"process worker-1 \(worker on \S+, pid \d+\) died: exit code 137", output), output[-4000:]


@pytest.mark.parametrize("engine", ["kvstore", "horovod"])
def test_scancel_ends_the_whole_job(tmp_path, site, engine):
    """scancel signals every step and the batch script; within KillWait everything of the job is gone."""
    slurm, env = site
    job_id = _probe_job(slurm, env, tmp_path, engine, "--steps", "100000")
    probes = _wait_for_workers(slurm, job_id, tmp_path)
    assert {p["env"]["SLURMD_NODENAME"] for p in probes} == set(slurm.nodes)
    assert slurm.client(["squeue", "-h", "-j", str(job_id), "-o", "%T"]).stdout.strip() == "RUNNING"
    steps = dict(line.split() for line in slurm.client(["squeue", "-h", "-s", "-j", str(job_id), "-o", "%i %N"])
                 .stdout.splitlines())
    nodes = sorted(slurm.nodes)
    assert steps.pop(f"{job_id}.batch") == nodes[0]
    if engine == "kvstore":   # one step of 4 tasks over both nodes
        assert list(steps.values()) == [slurm.client(["scontrol", "show", "hostlist", ",".join(nodes)]).stdout.strip()]
    else:                     # one single-task step per worker, each on its node
        assert sorted(steps.values()) == nodes
    time.sleep(2)
    t0 = time.monotonic()
    assert slurm.client(["scancel", str(job_id)]).returncode == 0
    record, done = _ended(slurm, job_id, 60)
    took = time.monotonic() - t0
    print(f"{engine}: scancel to the end of the job's last process {took:.1f} s; steps were {steps}")
    assert record["JobState"] == "CANCELLED" and done["JobState"] == "CANCELLED"
    assert took < KILL_WAIT + 20
    left = _left_behind(slurm, job_id)
    assert not left, left
    assert not any(alive(p["pid"]) for p in probes)
    if engine == "horovod":   # the launcher finished stopping its steps before SLURM's SIGKILL
        assert "terminated by SIGTERM; every process of the job was stopped" in _output(tmp_path, job_id)
