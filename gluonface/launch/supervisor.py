"""Start a planned job and supervise it until it finishes, fails or times out; leave nothing behind.

ps-lite never reports a dead peer (a dead worker hangs every other process forever) and Horovod only fails
fast when nothing is stuck outside its collectives, so this is what turns any failure into a prompt, named
error: every process runs in its own session (process group); the first non-zero exit tears the whole job
down (SIGTERM to each group, SIGKILL after a grace period; on ssh hosts the same by a remote command, since
a remote process outlives its ssh client) and the launcher reports which process died and its last log
lines. Servers and the scheduler are expected to exit by themselves once all workers succeed.
"""
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

TAIL_LINES = 15


@dataclass
class JobResult:
    """Outcome of a supervised job: ``returncode`` 0 on success; ``failed`` names the first failure."""
    returncode: int
    failed: Optional[str] = None
    message: str = ""


class _Proc:
    def __init__(self, spec, popen, log_path, echo):
        self.spec, self.popen, self.log_path = spec, popen, log_path
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self.reader = threading.Thread(target=self._pump, args=(echo,), daemon=True)
        self.reader.start()

    def _pump(self, echo):
        with open(self.log_path, "ab") as log:
            for line in iter(self.popen.stdout.readline, b""):
                log.write(line)
                log.flush()
                text = line.decode("utf-8", "replace").rstrip("\n")
                self.tail.append(text)
                if echo is not None:
                    echo.write(f"[{self.spec.name}] {text}\n")
                    echo.flush()
        self.popen.stdout.close()


def _describe(code):
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _signal_group(proc, sig):
    try:
        os.killpg(proc.popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _teardown(procs, grace, starter=None):
    """SIGTERM every live process group, then SIGKILL what is left after ``grace`` seconds; reap all.

    Processes on other hosts (ssh) survive their local client's death, so for every host where a process
    did not finish cleanly the starter's ``cleanup_commands`` run at the same time (TERM, grace, KILL there).
    """
    unclean = [p.spec.host for p in procs if p.popen.poll() != 0]
    for p in procs:
        _signal_group(p, signal.SIGTERM)
    remote = _start_cleanup(starter, list(dict.fromkeys(unclean)), grace)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        _signal_group(p, signal.SIGKILL)   # the group may hold children even when the leader is gone
        p.popen.wait()
        p.reader.join(timeout=5)
    for cleanup in remote:
        try:
            cleanup.wait(timeout=grace + 30)
        except subprocess.TimeoutExpired:
            cleanup.kill()
            cleanup.wait()


def _start_cleanup(starter, hosts, grace):
    commands = starter.cleanup_commands(hosts, grace) if starter is not None and hosts else []
    return [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True) for argv in commands]


def supervise(specs, starter, *, log_dir, timeout=None, grace=5.0, finish_grace=30.0, echo=sys.stderr,
              poll=0.2):
    """Run ``specs`` with ``starter`` until the job ends.

    Args:
        specs: ``ProcSpec`` list (started in order: scheduler, servers, workers).
        starter: a starter from ``gluonface.launch.starters``.
        log_dir: one ``<name>.log`` per process plus ``processes.json`` (name -> pid, host, role).
        timeout: hard wall-clock limit in seconds (None: none); exceeded -> code 124.
        grace: seconds between SIGTERM and SIGKILL during teardown.
        finish_grace: seconds servers/scheduler may take to exit after every worker succeeded.
        echo: stream for ``[name] line`` copies of every output line (None: silent).
    Returns:
        ``JobResult``.
    """
    os.makedirs(log_dir, exist_ok=True)
    procs = []
    previous = _stop_on_sigterm()
    try:
        for spec in specs:
            argv, env = starter.command(spec)
            popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(_Proc(spec, popen, os.path.join(log_dir, f"{spec.name}.log"), echo))
        _write_pids(log_dir, procs, getattr(starter, "job_id", None))
        return _watch(procs, timeout, finish_grace, poll)
    finally:
        _teardown(procs, grace, starter)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(Exception):
    """The launcher itself got SIGTERM (e.g. ``scancel``, ``kill``); the job is torn down first."""


def _stop_on_sigterm():
    """Turn SIGTERM into an exception so the ``finally`` above stops the job (children are in their own
    sessions and would otherwise outlive the launcher). Only possible in the main thread."""
    def handler(signum, frame):
        raise Terminated("the launcher received SIGTERM")
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread
        return None


def _watch(procs, timeout, finish_grace, poll):
    start = time.monotonic()
    main = [p for p in procs if p.spec.role in ("worker", "launcher")]
    workers_done_at = None
    while True:
        for p in procs:
            code = p.popen.poll()
            if code not in (None, 0):
                p.reader.join(timeout=2)   # let the last lines arrive
                return _failure(p, code)
        if workers_done_at is None and all(p.popen.poll() == 0 for p in main):
            workers_done_at = time.monotonic()
        if workers_done_at is not None:
            if all(p.popen.poll() == 0 for p in procs):
                return JobResult(0, None, "all processes finished")
            if time.monotonic() - workers_done_at > finish_grace:
                left = [p.spec.name for p in procs if p.popen.poll() is None]
                return JobResult(0, None, f"workers finished; stopped {', '.join(left)} which did not exit")
        if timeout is not None and time.monotonic() - start > timeout:
            live = [p.spec.name for p in procs if p.popen.poll() is None]
            return JobResult(124, None, f"timeout: the job ran longer than {timeout:g} s; stopped "
                                        f"{', '.join(live)} (raise --timeout if the job needs longer)")
        time.sleep(poll)


def _failure(proc, code):
    spec = proc.spec
    lines = "\n".join(f"    {line}" for line in proc.tail) or "    (no output)"
    message = (f"process {spec.name} ({spec.role} on {spec.host.name}, pid {proc.popen.pid}) died: "
               f"{_describe(code)}; the whole job was stopped. Last lines of {proc.log_path}:\n{lines}")
    return JobResult(code if 0 < code < 125 else 1 if code > 0 else 128 - code, spec.name, message)


def _write_pids(log_dir, procs, job_id=None):
    table = {p.spec.name: {"pid": p.popen.pid, "role": p.spec.role, "host": p.spec.host.name} for p in procs}
    if job_id:   # remote processes carry GLUONFACE_JOB=<job> in their environment (see SshStarter)
        for entry in table.values():
            entry["job"] = job_id
    tmp = os.path.join(log_dir, "processes.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1)
    os.replace(tmp, os.path.join(log_dir, "processes.json"))
