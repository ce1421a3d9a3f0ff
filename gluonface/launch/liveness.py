"""Stall detection: judge the heartbeats of a job's processes (``gluonface.parallel.heartbeat``).

A process that exits is seen by the supervisor; one that is alive but makes no progress is seen here. Each
source (a process, or one worker inside horovodrun's shared output) is stalled when

* it is *silent*: no heartbeat for longer than the stall timeout (stopped, frozen, its host gone), or
* it is *stuck*: heartbeats arrive but neither its step nor its phase changed for longer than its phase
  allows (e.g. waiting inside ``dist_sync`` or a collective for a peer that will never come).

What a phase allows: the stall timeout while training; ``startup_grace`` during start-up and the first
steps after a (re)start (imports, waiting for peers, compilation); a pause (checkpoint, verification,
elastic commit or reset) gets ``startup_grace`` the first time it is seen in the job and then
``PAUSE_FACTOR`` × the longest such pause so far (never less than the stall timeout). Servers and the
scheduler have no steps: only silence counts for them.

The stall timeout is ``--stall-timeout`` when given, else derived from the measured step time:
``STEP_FACTOR`` × the longest recent gap between two observed steps, at least ``FLOOR`` seconds.

In a stream shared by several workers (horovodrun in elastic mode), a worker that went quiet while
the others kept taking steps without it has left the job (Horovod re-formed the ring); it is forgotten.
"""
import collections
import threading
from dataclasses import dataclass
from typing import Optional

from gluonface.parallel.heartbeat import PAUSES

FLOOR = 60.0
STEP_FACTOR = 20.0
STARTUP_GRACE = 600.0
PAUSE_FACTOR = 5.0
GAPS_KEPT = 50


def heartbeat_interval(stall_timeout):
    """Seconds between heartbeats that give a ``stall_timeout`` (None: derived) several beats to notice."""
    if not stall_timeout:
        return 5.0
    return min(5.0, max(0.5, stall_timeout / 5.0))


@dataclass
class Stall:
    """A stalled source: ``proc`` (supervised process name), ``who`` (how to name it), ``detail``."""
    proc: str
    who: str
    detail: str
    silent: bool


class _Source:
    def __init__(self, proc, role, host, record, now):
        self.proc, self.role, self.host = proc, role, host
        self.pid = record.get("pid")
        self.first_seen = self.last_seen = self.last_progress = self.last_step_at = self.phase_since = now
        self.step, self.phase, self.rank, self.record_host = None, "startup", None, None
        self.gaps = collections.deque(maxlen=GAPS_KEPT)
        self.error = None

    def who(self, shared):
        if not shared:
            return self.proc
        rank = f" rank {self.rank}" if self.rank is not None else ""
        return f"{self.proc}{rank} (pid {self.pid} on {self.record_host})"


class Liveness:
    """Heartbeat bookkeeping of one job (thread-safe: output readers ``observe``, the supervisor ``check``s).

    Args:
        stall_timeout: seconds without progress while training; None = derived from the step time;
            0 = no stall detection.
        startup_grace: seconds allowed for start-up, warm-up steps and a first pause of each kind.
    """

    def __init__(self, stall_timeout=None, startup_grace=STARTUP_GRACE):
        self.explicit = stall_timeout
        self.startup_grace = max(startup_grace, stall_timeout or 0.0)
        self.interval = heartbeat_interval(stall_timeout)
        self._sources = {}
        self._shared = set()            # process names whose stream carries several workers
        self._longest_pause = {}
        self._lock = threading.Lock()

    def observe(self, proc, role, host, record, now):
        """Take one heartbeat ``record`` read from the output of process ``proc`` (role, host name)."""
        with self._lock:
            key = (proc, record.get("pid"))
            src = self._sources.get(key)
            if src is None:
                src = self._sources[key] = _Source(proc, role, host, record, now)
                if sum(1 for k in self._sources if k[0] == proc) > 1:
                    self._shared.add(proc)
            src.last_seen = now
            src.rank, src.record_host = record.get("rank"), record.get("host")
            step, phase = record.get("step"), record.get("phase") or "startup"
            if phase != src.phase:
                if src.phase in PAUSES:
                    kind = src.phase
                    self._longest_pause[kind] = max(self._longest_pause.get(kind, 0.0), now - src.phase_since)
                src.phase, src.phase_since, src.last_progress = phase, now, now
            if step is not None and (src.step is None or step > src.step):
                if src.step is not None and phase in ("warmup", "train"):
                    src.gaps.append(now - src.last_progress)
                src.step, src.last_progress, src.last_step_at = step, now, now
            if phase == "failed":
                src.error = record.get("error")

    def error_of(self, proc):
        """The error line a process reported in its ``failed`` heartbeat, or None."""
        with self._lock:
            errors = [s.error for s in self._sources.values() if s.proc == proc and s.error]
        return errors[-1] if errors else None

    def stall_timeout(self):
        """The stall timeout in force now (explicit, or derived from the steps seen so far)."""
        if self.explicit is not None:
            return self.explicit
        gaps = [g for s in self._sources.values() for g in s.gaps]
        return max(FLOOR, STEP_FACTOR * max(gaps, default=0.0), 4 * self.interval)

    def workers_of(self, proc, now):
        """One line per worker seen in a shared stream (horovodrun): how it ended or when it last beat."""
        with self._lock:
            if proc not in self._shared:
                return []
            out = []
            for s in self._sources.values():
                if s.proc != proc:
                    continue
                state = f"failed: {s.error}" if s.error else \
                    f"last heartbeat {now - s.last_seen:.0f} s ago at step {s.step} ({s.phase})"
                out.append(f"{s.who(True)} {state}")
            return out

    def finished_since(self, running):
        """When the last training source reported ``done``, if every one of them has (servers aside); else
        None. A process still running long after that hangs in MXNet's or Horovod's shutdown."""
        with self._lock:
            workers = [s for s in self._sources.values() if s.phase != "serving"]
            if not workers or any(s.phase != "done" and s.proc in running for s in workers):
                return None
            return max(s.phase_since for s in workers)

    def _pause_allowance(self, kind, timeout):
        longest = self._longest_pause.get(kind)
        return max(timeout, self.startup_grace if longest is None else PAUSE_FACTOR * longest)

    def _judge(self, src, now, timeout):
        """(silent, seconds, allowance) if ``src`` is stalled, else None."""
        if src.phase in ("done", "failed"):
            return None
        silent_for = now - src.last_seen
        silence_allowed = self.startup_grace if src.phase == "startup" else timeout
        if silent_for > silence_allowed:
            return True, silent_for, silence_allowed
        if src.phase == "serving":
            return None
        if src.phase in ("startup", "warmup"):
            allowed = self.startup_grace
        elif src.phase in PAUSES:
            allowed = self._pause_allowance(src.phase, timeout)
        else:
            allowed = timeout
        stuck_for = now - src.last_progress
        return (False, stuck_for, allowed) if stuck_for > allowed else None

    def check(self, now, running):
        """The stall to stop the job for, or None. ``running``: names of processes still running."""
        if self.explicit == 0:
            return None
        with self._lock:
            timeout = self.stall_timeout()
            live = [s for s in self._sources.values() if s.proc in running]
            stalled = []
            for src in live:
                verdict = self._judge(src, now, timeout)
                if verdict is None:
                    continue
                if self._left(src, live):
                    del self._sources[(src.proc, src.pid)]
                    continue
                stalled.append((src, verdict))
            if not stalled:
                return None
            # A peer that stopped beating is the likely cause even before its own timeout: the others may
            # have stopped progressing (waiting for it) a little earlier than its last beat.
            stalled = [(s, v) for s, v in stalled if not self._quiet(s, now)]
            stalled += [(s, (True, now - s.last_seen, timeout)) for s in live
                        if self._quiet(s, now) and not self._left(s, live)]
            # blame the frozen first (longest silent), then the one furthest behind (the others wait for it)
            stalled.sort(key=lambda sv: (not sv[1][0], -sv[1][1] if sv[1][0] else (sv[0].step or -1)))
            src, (silent, seconds, allowed) = stalled[0]
            return Stall(src.proc, src.who(src.proc in self._shared),
                         self._describe(src, silent, seconds, allowed, timeout, live), silent)

    def _quiet(self, src, now):
        """No beat for three intervals: the process is not running (stopped, frozen, gone)."""
        return src.phase not in ("done", "failed") and now - src.last_seen > 3 * self.interval

    def _left(self, src, live):
        """In a shared stream: the others took steps well after ``src`` went quiet, so the job goes on
        without it (Horovod dropped it). A stopped peer blocks them: at most a step slips through."""
        if src.proc not in self._shared:
            return False
        return any(o.proc == src.proc and o is not src and o.last_step_at > src.last_seen + 2 * self.interval
                   for o in live)

    def _describe(self, src, silent, seconds, allowed, timeout, live):
        at = f"step {src.step}" if src.step is not None else "before its first step"
        if silent:
            what = (f"no heartbeat for {seconds:.0f} s (last at {at}, phase {src.phase}): the process is "
                    "stopped, frozen or cut off")
        else:
            what = (f"alive but no progress for {seconds:.0f} s at {at} (phase {src.phase}, allowed "
                    f"{allowed:.0f} s)")
        others = [f"{o.who(o.proc in self._shared)} at step {o.step} ({o.phase})" for o in live
                  if o is not src and o.step is not None]
        how = "--stall-timeout" if self.explicit is not None else \
            f"derived: {STEP_FACTOR:g} x the slowest recent step, at least {FLOOR:g} s; set it with --stall-timeout"
        text = f"{what}; stall timeout {timeout:.0f} s ({how})"
        return text + (f"; others: {', '.join(others)}" if others else "")

    def silent_peers(self, now, exclude, running):
        """Sources other than ``exclude`` that went quiet: named in a failure message as possible causes."""
        with self._lock:
            quiet = [s for s in self._sources.values() if s.proc != exclude and s.proc in running
                     and s.phase not in ("done", "failed") and now - s.last_seen > 3 * self.interval]
            return [f"{s.who(s.proc in self._shared)} has sent no heartbeat for {now - s.last_seen:.0f} s "
                    f"(last at step {s.step}, phase {s.phase})" for s in quiet]
