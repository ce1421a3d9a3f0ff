"""Start a planned job and supervise it until it finishes, fails, stalls or times out; leave nothing behind.

ps-lite never reports a dead peer (a dead worker hangs every other process forever) and Horovod only fails
fast when nothing is stuck outside its collectives, so this is what turns any failure into a prompt, named
error. Three signals end a job:

* a process exits non-zero (or by a signal): the message names it, its host, how it ended and the error
  it reported (its ``failed`` heartbeat, else the last exception line of its output), plus its last lines;
* a process stalls: its heartbeats (``gluonface.parallel.heartbeat``, relayed on its output by every starter)
  stop, or stop advancing, for longer than the stall timeout (``gluonface.launch.liveness``); exit 124;
* ``timeout`` runs out; exit 124.

Then the whole job is torn down on every host (``gluonface.launch.teardown``). Servers and the scheduler
are expected to exit by themselves once all workers succeed.
"""
import collections
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

from gluonface.parallel.heartbeat import ENV_INTERVAL, MARKER, decode
from gluonface.launch.liveness import Liveness
from gluonface.launch.teardown import teardown

TAIL_LINES = 15
STOPPED_FOR_TIME = 124   # --timeout, or a stalled process
_MARKER = MARKER.encode()
_PREFIX_ONLY = re.compile(r"^\s*(\[\d+\]<std(out|err)>:)?\s*$")   # what horovodrun leaves of a heartbeat line
_ERROR_LINE = re.compile(r"^(error: |[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Fault)(: |$))")


@dataclass
class JobResult:
    """Outcome of a supervised job: ``returncode`` 0 on success; ``failed`` names the process to blame."""
    returncode: int
    failed: Optional[str] = None
    message: str = ""


class _Proc:
    def __init__(self, spec, popen, log_path, echo, liveness):
        self.spec, self.popen, self.log_path, self.liveness = spec, popen, log_path, liveness
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self.exited_at = None   # when it ended: the first of several failures is the one to blame
        self.last_line_at = time.monotonic()
        self.reader = threading.Thread(target=self._pump, args=(echo,), daemon=True)
        self.reader.start()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self):
        self.popen.wait()
        self.exited_at = time.monotonic()

    def settle(self, quiet=0.3, cap=2.0):
        """Let the last lines of an ended process arrive: until its output has been quiet for ``quiet``
        seconds (children such as data-loader workers may hold the pipe open, so EOF may never come)."""
        deadline = time.monotonic() + cap
        ended = self.exited_at or time.monotonic()
        while self.reader.is_alive() and time.monotonic() < deadline:
            if time.monotonic() - max(self.last_line_at, ended) > quiet:
                return
            time.sleep(0.05)

    def _pump(self, echo):
        with open(self.log_path, "ab") as log:
            for line in iter(self.popen.stdout.readline, b""):
                if _MARKER in line:
                    text, record = decode(line.decode("utf-8", "replace").rstrip("\n"))
                    if record is not None:
                        self.liveness.observe(self.spec.name, self.spec.role, self.spec.host.name, record,
                                              time.monotonic())
                        if _PREFIX_ONLY.match(text):
                            continue
                        line = (text + "\n").encode()
                self.last_line_at = time.monotonic()
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


def supervise(specs, starter, *, log_dir, timeout=None, grace=5.0, finish_grace=30.0, echo=sys.stderr,
              poll=0.2, stall_timeout=None, sweeps=()):
    """Run ``specs`` with ``starter`` until the job ends.

    Args:
        specs: ``ProcSpec`` list (started in order: scheduler, servers, workers).
        starter: a starter from ``gluonface.launch.starters``.
        log_dir: one ``<name>.log`` per process plus ``processes.json`` (name -> pid, host, role, job tag).
        timeout: hard wall-clock limit in seconds (None: none); exceeded -> code 124.
        grace: seconds between SIGTERM and SIGKILL during teardown.
        finish_grace: seconds servers/scheduler may take to exit after every worker succeeded.
        echo: stream for ``[name] line`` copies of every output line (None: silent).
        stall_timeout: seconds a training process may go without progress (None: derived from the step
            time, see ``gluonface.launch.liveness``; 0: no stall detection); stalled -> code 124.
        sweeps: extra ``[(starter, hosts)]`` to clean by the job tag at teardown (hosts that processes
            this launcher did not start run on: an elastic job's remote workers).
    Returns:
        ``JobResult``.
    """
    os.makedirs(log_dir, exist_ok=True)
    liveness = Liveness(stall_timeout)
    procs, result = [], None
    previous = _stop_on_sigterm()
    try:
        for spec in specs:
            spec = dataclasses.replace(spec, env=dict(spec.env, **{ENV_INTERVAL: f"{liveness.interval:g}"}))
            argv, env = starter.command(spec)
            # stdin: a pipe nobody writes to, open as long as this launcher lives (the processes' lifeline,
            # see gluonface.parallel.heartbeat: its end of file tells them the launcher is gone)
            popen = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(_Proc(spec, popen, os.path.join(log_dir, f"{spec.name}.log"), echo, liveness))
        _write_pids(log_dir, procs, getattr(starter, "job_id", None))
        result = _watch(procs, timeout, finish_grace, poll, liveness)
        return result
    finally:
        teardown(procs, grace, _sweeps(procs, starter, result, sweeps))
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sweeps(procs, starter, result, extra):
    """Hosts to clean by the job tag: all of them unless every process ended cleanly."""
    clean = result is not None and result.returncode == 0
    hosts = [p.spec.host for p in procs if not clean or p.popen.poll() != 0]
    unique = list({h.name: h for h in hosts}.values())
    return [(starter, unique)] + ([] if clean else list(extra))


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


def _watch(procs, timeout, finish_grace, poll, liveness):
    start = time.monotonic()
    main = [p for p in procs if p.spec.role in ("worker", "launcher")]
    workers_done_at = None
    while True:
        failed = [p for p in procs if p.popen.poll() not in (None, 0)]
        if failed:
            first = min(failed, key=lambda p: p.exited_at or time.monotonic())
            first.settle()
            return _failure(first, first.popen.returncode, procs, liveness)
        if workers_done_at is None and all(p.popen.poll() == 0 for p in main):
            workers_done_at = time.monotonic()
        if workers_done_at is not None:
            if all(p.popen.poll() == 0 for p in procs):
                return JobResult(0, None, "all processes finished")
            if time.monotonic() - workers_done_at > finish_grace:
                left = [p.spec.name for p in procs if p.popen.poll() is None]
                return JobResult(0, None, f"workers finished; stopped {', '.join(left)} which did not exit")
        else:
            running = {p.spec.name for p in procs if p.popen.poll() is None}
            finished = liveness.finished_since(running)
            if finished is not None and time.monotonic() - finished > finish_grace:
                return JobResult(0, None, f"every worker finished training; stopped {', '.join(sorted(running))} "
                                          f"which did not exit {finish_grace:g} s later (a hang in shutdown)")
            stall = liveness.check(time.monotonic(), running)
            if stall is not None:
                return _stalled(stall, procs)
        if timeout is not None and time.monotonic() - start > timeout:
            live = [p.spec.name for p in procs if p.popen.poll() is None]
            return JobResult(STOPPED_FOR_TIME, None, f"timeout: the job ran longer than {timeout:g} s; stopped "
                                                     f"{', '.join(live)} (raise --timeout if the job needs longer)")
        time.sleep(poll)


def _where(proc):
    spec = proc.spec
    return f"{spec.role} on {spec.host.name}, pid {proc.popen.pid}"


def _last_lines(proc):
    lines = "\n".join(f"    {line}" for line in proc.tail) or "    (no output)"
    return f"Last lines of {proc.log_path}:\n{lines}"


def error_from_output(lines):
    """The last line of ``lines`` that states an error (an exception's last line, or ``error: ...``)."""
    for line in reversed(list(lines)):
        text = re.sub(r"^\[\d+\]<std(out|err)>:", "", line).strip()
        if _ERROR_LINE.match(text):
            return text
    return None


def _failure(proc, code, procs, liveness):
    spec = proc.spec
    now = time.monotonic()
    workers = liveness.workers_of(spec.name, now)   # horovodrun: its workers' own ends say more
    reason = (None if workers else liveness.error_of(spec.name)) or error_from_output(proc.tail)
    running = {p.spec.name for p in procs if p.popen.poll() is None}
    peers = liveness.silent_peers(now, spec.name, running)
    note = f" Its workers: {'; '.join(workers)}." if workers else ""
    note += f" Possible cause: {'; '.join(peers)}." if peers else ""
    later = [f"{p.spec.name} ({_describe(p.popen.returncode)})" for p in procs
             if p is not proc and p.popen.poll() not in (None, 0)]
    note += f" Failed after it: {', '.join(later)}." if later else ""
    message = (f"process {spec.name} ({_where(proc)}) died: {_describe(code)}"
               f"{f' ({reason})' if reason else ''}; the whole job was stopped.{note} {_last_lines(proc)}")
    return JobResult(code if 0 < code < 125 else 1 if code > 0 else 128 - code, spec.name, message)


def _stalled(stall, procs):
    proc = next(p for p in procs if p.spec.name == stall.proc)
    message = (f"process {stall.who} ({_where(proc)}) stalled: {stall.detail}; the whole job was stopped. "
               f"{_last_lines(proc)}")
    return JobResult(STOPPED_FOR_TIME, stall.proc, message)


def _write_pids(log_dir, procs, job_id=None):
    table = {p.spec.name: {"pid": p.popen.pid, "role": p.spec.role, "host": p.spec.host.name} for p in procs}
    if job_id:   # every process carries GLUONFACE_JOB=<job> in its environment (see starters)
        for entry in table.values():
            entry["job"] = job_id
    tmp = os.path.join(log_dir, "processes.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1)
    os.replace(tmp, os.path.join(log_dir, "processes.json"))
