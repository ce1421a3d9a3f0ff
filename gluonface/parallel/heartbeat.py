"""Heartbeat of a supervised process: a liveness signal (with the training step) on the output stream.

``gluonface launch`` sets ``GLUONFACE_HEARTBEAT=<seconds>`` for every process it starts; such a process then
writes one line every that many seconds to its stderr (file descriptor 2)::

    @gluonface-heartbeat {"pid": 4711, "host": "node3", "rank": 1, "size": 2, "step": 120, "phase": "train"}

Why the output stream and not a file: every starter already relays a process's output to the launcher
(a pipe locally, ssh's channel, srun's I/O forwarding, horovodrun's per-rank prefixes), and a shared file
system between hosts is not guaranteed. The launcher (``gluonface.launch.liveness``) strips these lines from
the logs and judges progress from them: a stopped process sends nothing, a process stuck in a collective
sends beats whose step does not advance.

The beats come from a daemon thread, so they keep coming while the main thread waits in MXNet or Horovod
(those waits release the interpreter lock) and stop when the process is stopped or frozen.

Dead-man switch: a launcher killed outright tears nothing down, so the process watches for it to be gone
and then stops its own child processes (data-loader workers) and leaves at once. Two signs: a heartbeat
write fails with EPIPE (the launcher held the read end), or stdin, a pipe whose write end only the
launcher holds, reaches end of file. The second is the one that crosses ssh: OpenSSH's client does not
exit when its own stdout breaks (so the remote side never sees EPIPE), but it does pass end of file on
its stdin to the remote command; srun and horovodrun's own ssh do the same.

Phases: ``startup`` (imports, connecting to peers, building), ``warmup`` (the first steps after a (re)start,
compilation included), ``train``, pauses (``checkpoint``, ``verify``, ``commit``, ``reset``: allowed longer
without a new step), ``serving`` (parameter servers and the scheduler, which have no step), ``done`` and
``failed`` (with ``error``, the exception's last line).
"""
import contextlib
import errno
import json
import os
import socket
import threading

ENV_INTERVAL = "GLUONFACE_HEARTBEAT"
MARKER = "@gluonface-heartbeat "
PAUSES = ("checkpoint", "verify", "commit", "reset")
WARMUP_STEPS = 2        # steps after a (re)start that may include compilation and first allocations
ORPHAN_EXIT_CODE = 70   # nobody reads it (the launcher is gone); distinct from training failures


def encode(record):
    """One heartbeat line (bytes, newline-terminated) for ``record`` (a JSON-able dict)."""
    return (MARKER + json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()


def decode(line):
    """Split an output line into ``(text without the heartbeat, record or None)``.

    A heartbeat may share a line with other output (a progress bar without a newline, horovodrun's
    ``[1]<stderr>:`` prefix): the text before the marker is returned as the rest of the line."""
    at = line.find(MARKER)
    if at < 0:
        return line, None
    try:
        record = json.loads(line[at + len(MARKER):])
    except ValueError:
        return line, None
    return line[:at], record if isinstance(record, dict) else None


class Heartbeat:
    """The beating thread of one process (inert when ``interval`` is None: nothing is written).

    Args:
        interval: seconds between beats, or None (not supervised).
        fd: file descriptor the beats go to (stderr).
        fault: a ``gluonface.parallel.fault_switch.FaultSwitch`` or None (test-only failures inside a step).
    """

    def __init__(self, interval=None, fd=2, fault=None):
        self.interval, self.fd, self.fault = interval, fd, fault
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "rank": None, "size": None,
                       "step": None, "phase": "startup"}
        self._warmup_until = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        if interval:
            self._thread = threading.Thread(target=self._run, name="gluonface-heartbeat", daemon=True)
            self._thread.start()
            if _is_pipe(0):
                threading.Thread(target=_watch_lifeline, args=(0,), name="gluonface-lifeline", daemon=True).start()

    @property
    def enabled(self):
        return self._thread is not None

    def _run(self):
        self.beat()
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self):
        """Write one beat now (also called on phase changes that the launcher should see at once)."""
        if not self.enabled:
            return
        with self._lock:
            data = encode(self.record)
        try:
            os.write(self.fd, data)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                _leave_orphaned()

    def _set(self, **fields):
        with self._lock:
            self.record.update(fields)

    def set_rank(self, rank, size):
        """This worker's rank and the job's size (again after an elastic reset)."""
        self._set(rank=int(rank), size=int(size))

    def phase(self, name, now=False):
        """Enter phase ``name``; ``now`` writes a beat at once."""
        self._set(phase=name)
        if now:
            self.beat()

    @contextlib.contextmanager
    def pausing(self, kind):
        """A pause without steps (``checkpoint``, ``verify``, ``commit``): the launcher allows it longer."""
        previous = self.record["phase"]
        self.phase(kind, now=True)
        try:
            yield
        finally:
            self._set(phase=previous)

    def training(self, step):
        """The step loop starts (or restarts) at ``step``: the first ``WARMUP_STEPS`` steps are warm-up."""
        self._warmup_until = int(step) + WARMUP_STEPS
        self._set(step=int(step), phase="warmup")
        self.beat()

    def inside_step(self, step):
        """Called inside step ``step`` (after backward, before the update): where test faults fire."""
        if self.fault is not None:
            self.fault.fire(step, self.record["rank"])

    def stepped(self, step):
        """Step ``step`` is complete."""
        phase = self.record["phase"]
        if phase == "warmup" and (self._warmup_until is None or step >= self._warmup_until):
            phase = "train"
        self._set(step=int(step), phase=phase)

    def failed(self, error):
        """The process is about to exit because of ``error`` (one line): tell the launcher why."""
        self._set(phase="failed", error=str(error)[:2000])   # one line stays below PIPE_BUF
        self.beat()

    def close(self, phase="done"):
        """Stop beating (after a last beat in ``phase``)."""
        if self.enabled and not self._stop.is_set():
            self._set(phase=phase)
            self.beat()
            self._stop.set()


def _is_pipe(fd):
    import stat
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _watch_lifeline(fd):
    """Read ``fd`` (stdin from the launcher, never written to) until end of file: the launcher is gone."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        return
    _leave_orphaned()


def _leave_orphaned():
    """The launcher is gone: stop our child processes (they hold no state worth keeping) and exit now.

    No clean shutdown: in a ps-lite job it would wait for peers forever, and nobody reads the output."""
    import multiprocessing
    for child in multiprocessing.active_children():
        try:
            child.kill()
        except OSError:
            pass
    os._exit(ORPHAN_EXIT_CODE)


def start_heartbeat(environ=None):
    """The ``Heartbeat`` of this process as the launcher asked for it (inert without ``GLUONFACE_HEARTBEAT``)."""
    from gluonface.parallel.fault_switch import FaultSwitch
    env = os.environ if environ is None else environ
    raw = env.get(ENV_INTERVAL, "")
    try:
        interval = float(raw) if raw else None
    except ValueError:
        interval = None
    return Heartbeat(interval if interval and interval > 0 else None, fault=FaultSwitch.from_env(env))
