"""What the SLURM stand-ins share: the cluster description, the job spool, running on a node, killing a job.

The cluster is a JSON file (passed by the wrappers as ``--standin-cluster FILE``)::

    {"name": "gf1234", "nodes": ["gf1234n1", "gf1234n2"], "cpus_per_node": 4, "spool": "/tmp/.../spool",
     "kill_wait": 5, "kill_on_bad_exit": 0}

Nodes are network namespaces. ``spool/jobs/<id>/`` holds a job's allocation (``alloc.json``), its batch
script, its steps and, once it ended, ``state.json``. Like proctrack/cgroup, a job's processes are found
by what SLURM puts in every one of their environments (``SLURM_JOB_ID`` and ``SLURM_CLUSTER_NAME``), so
forked children and processes in other sessions are included.
"""
import contextlib
import fcntl
import json
import os
import signal
import sys
import time


def take_cluster_arg(argv):
    """Remove ``--standin-cluster FILE`` from the front of argv; returns (cluster dict, remaining argv)."""
    if argv[:1] != ["--standin-cluster"]:
        sys.exit("stand-in SLURM tool: run through the wrapper installed by standins.install")
    with open(argv[1], encoding="utf-8") as f:
        cluster = json.load(f)
    cluster["file"] = argv[1]
    return cluster, argv[2:]


def job_dir(cluster, job_id):
    return os.path.join(cluster["spool"], "jobs", str(job_id))


@contextlib.contextmanager
def locked(path):
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def next_id(path):
    """Increment the integer counter in ``path`` under a lock; returns the new value."""
    with locked(path) as f:
        f.seek(0)
        value = int(f.read().strip() or "0") + 1
        f.seek(0)
        f.truncate()
        f.write(str(value))
    return value


def node_argv(node, argv):
    """Run ``argv`` on ``node``: inside its network namespace, with the node's host name (own UTS ns)."""
    return ["ip", "netns", "exec", node, "unshare", "--uts", "--", "/bin/sh", "-c",
            'hostname "$1" && shift && exec "$@"', "slurmstepd", node, *argv]


def job_processes(cluster, job_id):
    """Pids of live processes whose environment marks them as part of job ``job_id`` of this cluster."""
    marks = (f"SLURM_JOB_ID={job_id}".encode(), f"SLURM_CLUSTER_NAME={cluster['name']}".encode())
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if all(m in env for m in marks) and int(pid) != os.getpid():
            pids.append(int(pid))
    return pids


def kill_job_processes(cluster, job_id):
    """SIGCONT+SIGTERM every process of the job, SIGKILL survivors after KillWait; returns the pids found."""
    pids = job_processes(cluster, job_id)
    for sig in (signal.SIGCONT, signal.SIGTERM):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    deadline = time.monotonic() + cluster.get("kill_wait", 30)
    while time.monotonic() < deadline and job_processes(cluster, job_id):
        time.sleep(0.2)
    for pid in job_processes(cluster, job_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
