"""Test-only failure injection inside a training step: ``GLUONFACE_TEST_FAULT``.

For the fault-matrix tests (tests/distributed/test_dist_faults.py), which need a worker that fails the way
real code fails (an exception deep inside a step, or a hang), at a known step. Never set it otherwise.

Format: ``KIND,step=S[,rank=R]`` with KIND ``raise`` (a ``RuntimeError`` after the backward pass of step S,
before the update: the peers have sent their gradients and wait for ours) or ``hang`` (the step never
finishes; the process stays alive and keeps its heartbeat, like a worker deadlocked in a collective).
Without ``rank`` every worker fails. Step S is 1-based (the S-th optimizer step of the run).
"""
import time

from gluonface.errors import GluonFaceError

ENV = "GLUONFACE_TEST_FAULT"
KINDS = ("raise", "hang")


class InjectedFault(RuntimeError):
    """The failure ``GLUONFACE_TEST_FAULT`` asked for."""


class FaultSwitch:
    def __init__(self, kind, step, rank=None):
        if kind not in KINDS:
            raise GluonFaceError(f"{ENV}: unknown kind {kind!r}; fix: use one of {', '.join(KINDS)}")
        self.kind, self.step, self.rank = kind, int(step), None if rank is None else int(rank)

    @classmethod
    def parse(cls, text):
        kind, *items = [p.strip() for p in text.split(",")]
        fields = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or key not in ("step", "rank") or not value.strip().isdigit():
                raise GluonFaceError(f"{ENV}={text!r}: cannot read {item!r}; fix: write KIND,step=S[,rank=R]")
            fields[key] = int(value)
        if "step" not in fields:
            raise GluonFaceError(f"{ENV}={text!r} names no step; fix: write KIND,step=S[,rank=R]")
        return cls(kind, fields["step"], fields.get("rank"))

    @classmethod
    def from_env(cls, environ):
        text = environ.get(ENV, "").strip()
        return cls.parse(text) if text else None

    def fire(self, step, rank):
        """Fail now if this is the step (and rank) the switch names."""
        if step != self.step or (self.rank is not None and rank != self.rank):
            return
        if self.kind == "hang":
            while True:
                time.sleep(3600)
        raise InjectedFault(f"injected test fault at step {step} on rank {rank} at {time.time():.3f} ({ENV})")
