"""``gluonface launch --slurm FILE --submit`` end to end on a stand-in SLURM whose nodes are network namespaces.

The stand-in sbatch allocates the two namespaces (``SLURM_JOB_NODELIST=gf<tag>n[1-2]``) and runs the
generated script on the first one; the stand-in srun starts each task in its node's namespace with the
SLURM_* variables a real step gives; scontrol expands the node list (see ``standins/``). The job must train
to its last checkpoint, put each role/rank on the node the script means, and leave nothing running when
its script ends (the stand-in records what SLURM's job-end cleanup had to kill).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from standins import install
from standins.slurm_cluster import job_processes
from test_dist_train_launch import _config, data  # noqa: F401  (data: the tiny rec fixture)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
KILL_WAIT = 5
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_step_worker.py")


@pytest.fixture
def slurm_site(tmp_path, two_hosts):
    """A two-node stand-in cluster; sbatch/srun/scontrol first on PATH, then the venv (an activated venv)."""
    names, addrs, _ = two_hosts
    cluster = {"name": f"c{names[0][2:-2]}", "nodes": names, "cpus_per_node": 4, "spool": str(tmp_path / "spool"),
               "kill_wait": KILL_WAIT}
    os.makedirs(cluster["spool"])
    config = tmp_path / "cluster.json"
    config.write_text(json.dumps(cluster))
    bin_dir = install(tmp_path / "bin", ["sbatch", "srun", "scontrol"], "--standin-cluster", config)
    env = dict(os.environ, PATH=os.pathsep.join([bin_dir, os.path.dirname(sys.executable), os.environ["PATH"]]))
    yield cluster, names, addrs, env
    _cancel_all(cluster)


def _cancel_all(cluster):
    """Stop (by pid) any job a failed test left: its job process cancels it like scancel would."""
    jobs = os.path.join(cluster["spool"], "jobs")
    for job_id in os.listdir(jobs) if os.path.isdir(jobs) else []:
        pid_file = os.path.join(jobs, job_id, "daemon.pid")
        if os.path.exists(os.path.join(jobs, job_id, "state.json")) or not os.path.exists(pid_file):
            continue
        pid = int(open(pid_file).read())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + KILL_WAIT + 10
        while time.monotonic() < deadline and not os.path.exists(os.path.join(jobs, job_id, "state.json")):
            time.sleep(0.2)
        for leftover in job_processes(cluster, job_id):
            os.kill(leftover, signal.SIGKILL)


def _wait_for_job(cluster, job_id, timeout):
    path = os.path.join(cluster["spool"], "jobs", str(job_id), "state.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not os.path.exists(path):
        time.sleep(0.5)
    assert os.path.exists(path), f"job {job_id} still running after {timeout} s"
    with open(path) as f:
        return json.load(f)


def _submit(tmp_path, env, *args):
    """Run ``gluonface launch ... --slurm FILE --submit`` on the "login node"; returns the job id."""
    proc = subprocess.run([sys.executable, "-m", "gluonface", "launch", *args, "--workers", "2", "--slurm",
                           str(tmp_path / "job.sbatch"), "--submit", "--timeout", "240"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(re.search(r"Submitted batch job (\d+)", proc.stdout).group(1))


def _output(tmp_path, job_id):
    return next(tmp_path.glob(f"gluonface-*-{job_id}.out")).read_text(errors="replace")


# kvstore without --interface: nodes find their address from their host name; Horovod needs --interface
@pytest.mark.parametrize("engine,where", [("kvstore", []), ("horovod", ["--interface", "gfnet0"])])
def test_submit_trains_to_the_last_checkpoint(tmp_path, data, slurm_site, engine, where):  # noqa: F811
    cluster, names, addrs, env = slurm_site
    cfg, run_dir = _config(tmp_path, data, steps=3), tmp_path / "run"
    t0 = time.monotonic()
    job_id = _submit(tmp_path, env, cfg, "--engine", engine, *where, "--set", f"train.run_dir={run_dir}")
    state = _wait_for_job(cluster, job_id, 200)
    print(f"{engine} via sbatch: {time.monotonic() - t0:.1f} s")
    output = _output(tmp_path, job_id)
    assert state["state"] == "COMPLETED" and state["exit_code"] == 0, output[-4000:]
    assert state["killed_at_end"] == [], "the job left processes for SLURM's job-end cleanup"

    with open(run_dir / "checkpoints" / "latest") as f:
        latest = f.read().strip()
    with open(run_dir / "checkpoints" / latest / "state.json") as f:
        assert json.load(f)["step"] == 3
    from gluonface.engine.checkpoint import load_backbone
    load_backbone(str(run_dir), "latest")
    with open(run_dir / "metrics.jsonl") as f:
        assert len([line for line in f if '"loss"' in line]) == 3

    if engine == "kvstore":
        tasks = {int(t): (node, role, host) for t, node, role, host in
                 re.findall(r"slurm task (\d+) on (\S+): (\w+) \(DMLC_NODE_HOST=(\S+)\)", output)}
        assert [tasks[t][1] for t in range(4)] == ["scheduler", "server", "worker", "worker"], output[-3000:]
        assert tasks[0][0] == names[0]                      # the scheduler is where DMLC_PS_ROOT_URI points
        assert {tasks[2][0], tasks[3][0]} == set(names)     # one worker per node
        assert all(host == addrs[names.index(node)] for node, role, host in tasks.values() if role != "scheduler")
    else:
        logs = sorted((run_dir / "launch").iterdir())[-1]
        table = json.loads((logs / "processes.json").read_text())
        assert (table["worker-0"]["host"], table["worker-1"]["host"]) == tuple(names)


@pytest.mark.parametrize("engine", ["kvstore", "horovod"])
def test_a_dead_worker_ends_the_job_and_leaves_nothing(tmp_path, slurm_site, engine):
    """kvstore: srun --kill-on-bad-exit stops the step (ps-lite would hang); horovod: the launcher stops
    the other srun steps. Either way nothing is left for SLURM's job-end cleanup."""
    cluster, names, addrs, env = slurm_site
    out = tmp_path / "out"
    worker = f"{sys.executable} {WORKER} --out {out} --engine {engine} --steps 100000 --die-at 3"
    t0 = time.monotonic()
    job_id = _submit(tmp_path, env, "-", "--engine", engine, "--interface", "gfnet0", "--exec", worker)
    state = _wait_for_job(cluster, job_id, 150)
    output = _output(tmp_path, job_id)
    print(f"{engine} via sbatch, worker killed: {time.monotonic() - t0:.1f} s")
    assert state["state"] == "FAILED" and state["exit_code"] != 0, output[-4000:]
    assert state["killed_at_end"] == [], output[-4000:]
    assert ("Terminating StepId" in output) if engine == "kvstore" else ("died" in output), output[-4000:]
