"""Elastic Horovod jobs: ``horovodrun`` with a host-discovery script, supervised like any other process.

Horovod's elastic driver (not ours) watches the workers, blacklists the host of a failed worker, and
re-forms the ring with the survivors (down to ``--min-workers``); the workers roll back to their last
commit (``gluonface.parallel.elastic``). ``gluonface train`` does that when ``dist.elastic`` is set, which this
launcher sets on its train command, with ``dist.min_workers``. Because a failed worker's whole *host* is
blacklisted, a one-machine job lists the machine under two names (``127.0.0.1`` and ``localhost``, both
local to Horovod), one slot each.
"""
import os
import shlex
import stat

from gluonface.errors import GluonFaceError
from gluonface.launch.plan import horovodrun_argv, launcher_spec

_LOCAL_ALIASES = ("127.0.0.1", "localhost")


def discovery_lines(hosts, workers):
    """``host:slots`` lines for Horovod's host discovery (hosts already validated by the hostfile parser)."""
    if len(hosts) == 1 and hosts[0].name in _LOCAL_ALIASES:
        if workers > len(_LOCAL_ALIASES):
            raise GluonFaceError(f"a one-machine elastic job supports at most {len(_LOCAL_ALIASES)} workers (one "
                                 "per local host alias); fix: --workers 2, or give a hostfile")
        return [f"{name}:1" for name in _LOCAL_ALIASES[:workers]]
    return [f"{h.name}:{h.slots}" for h in hosts]


def write_discovery_script(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\n# Horovod host discovery (written by gluonface launch --elastic)\n")
        f.write("".join(f"echo {line}\n" for line in lines))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _horovodrun():
    """``horovodrun`` beside this interpreter (a venv's bin is often not on PATH), else from PATH."""
    import shutil
    import sys
    beside = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    found = beside if os.access(beside, os.X_OK) else shutil.which("horovodrun")
    if not found:
        raise GluonFaceError("horovodrun not found; fix: install horovod==0.28.1 into this environment")
    return found


def run_elastic(req, hosts, command, env, log_dir, echo):
    """Start ``horovodrun --gloo`` in elastic mode and supervise it; returns the exit code."""
    from gluonface.launch.supervisor import supervise
    from gluonface.launch.starters import LocalStarter, SshStarter
    if not 1 <= req.min_workers <= req.workers:
        raise GluonFaceError(f"--min-workers {req.min_workers} must be between 1 and --workers {req.workers}")
    os.makedirs(log_dir, exist_ok=True)
    script = write_discovery_script(os.path.join(log_dir, "discover_hosts.sh"), discovery_lines(hosts, req.workers))
    local = len(hosts) == 1 and hosts[0].name in _LOCAL_ALIASES
    if not local and shlex.quote(os.getcwd()) != os.getcwd():
        raise GluonFaceError(f"an elastic job across hosts cannot start from '{os.getcwd()}': horovodrun changes "
                             "into this directory on the other hosts without quoting it (a space or shell "
                             "character sends them to $HOME); fix: launch from a directory whose path has none")
    if not local and not req.interface:
        raise GluonFaceError("a multi-host elastic job needs --interface (the NIC the hosts share)")
    if req.command is None:   # the real `gluonface train`: tell it to run elastically
        command = tuple(command) + ("--set", "dist.elastic=true", "--set", f"dist.min_workers={req.min_workers}")
    argv = horovodrun_argv(command, None, workers=req.workers, interface=req.interface or "lo", elastic=True,
                           min_workers=req.min_workers, discovery_script=script)
    argv = (_horovodrun(),) + tuple(argv[1:])
    spec = launcher_spec(argv, env=env)
    if req.dry_run:
        print(" ".join(argv), file=echo)
        return 0
    starter = LocalStarter()
    # horovodrun reaches the other hosts with its own ssh; the tag it passes on lets teardown find them
    sweeps = [] if local else [(SshStarter(job_id=starter.job_id), [h for h in hosts])]
    result = supervise([spec], starter, log_dir=log_dir, timeout=req.timeout, echo=echo,
                       stall_timeout=req.stall_timeout, sweeps=sweeps)
    print(f"gluonface launch: {result.message} (logs: {log_dir})", file=echo)
    return result.returncode
