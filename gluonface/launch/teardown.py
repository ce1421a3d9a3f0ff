"""Stop every process of a job, on every host, whatever state it is in; the same for every starter.

Two nets, run together: (1) each supervised process is the leader of its own process group (session):
the group gets SIGTERM and SIGCONT (a stopped process keeps a TERM pending until it runs again), then
SIGKILL after the grace period, which also reaches children that stayed in the group (data-loader
workers); (2) on every host of the job the starter's ``cleanup_commands`` stop whatever still carries the
launch's ``GLUONFACE_JOB`` tag: remote processes that outlive their ssh client, and local ones that left
their group (Horovod runs its workers in sessions of their own). Nothing waits for a process to agree.
"""
import os
import signal
import subprocess
import time


def signal_group(popen, sig):
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_cleanup(sweeps, grace):
    """Start the cleanup commands of ``sweeps`` (``[(starter, hosts)]``); returns the Popen objects."""
    started = []
    for starter, hosts in sweeps:
        if starter is None or not hosts:
            continue
        for argv in starter.cleanup_commands(hosts, grace):
            started.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True))
    return started


def teardown(procs, grace, sweeps=()):
    """Stop ``procs`` (objects with ``popen`` and ``reader``) and sweep ``sweeps``; returns when all are gone.

    Args:
        procs: the supervised processes.
        grace: seconds between SIGTERM and SIGKILL.
        sweeps: ``[(starter, hosts)]`` whose tag sweep runs at the same time.
    """
    for p in procs:
        signal_group(p.popen, signal.SIGTERM)
        signal_group(p.popen, signal.SIGCONT)
    remote = start_cleanup(sweeps, grace)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        signal_group(p.popen, signal.SIGKILL)   # the group may hold children even when the leader is gone
        p.popen.wait()
        p.reader.join(timeout=5)
        if p.popen.stdin is not None:
            p.popen.stdin.close()
    for cleanup in remote:
        try:
            cleanup.wait(timeout=grace + 30)
        except subprocess.TimeoutExpired:
            cleanup.kill()
            cleanup.wait()
