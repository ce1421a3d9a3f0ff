"""Stall detection from heartbeats, on synthetic beats and a virtual clock (gluonface.launch.liveness)."""
import pytest

from gluonface.parallel.heartbeat import decode, encode
from gluonface.launch.liveness import FLOOR, STARTUP_GRACE, Liveness


def beat(live, proc, now, step=None, phase="train", pid=1, rank=0):
    live.observe(proc, "worker", "h1", {"pid": pid, "host": "h1", "rank": rank, "step": step, "phase": phase}, now)


def train(live, procs, start, stop, every=1.0, step_time=0.5):
    """Beats every ``every`` s from ``start`` to ``stop``, each worker a step per ``step_time`` s."""
    t = start
    while t <= stop:
        for i, proc in enumerate(procs):
            beat(live, proc, t, step=int(t / step_time), pid=i + 1, rank=i)
        t += every
    return t - every


def test_wire_format_survives_a_shared_line():
    line = encode({"pid": 3, "step": 7, "phase": "train"}).decode().rstrip("\n")
    assert decode(line) == ("", {"pid": 3, "step": 7, "phase": "train"})
    assert decode("[1]<stderr>:" + line) == ("[1]<stderr>:", {"pid": 3, "step": 7, "phase": "train"})
    assert decode("loss 0.3 | 12/40" + line)[0] == "loss 0.3 | 12/40"
    assert decode("plain output") == ("plain output", None)


def test_derived_timeout_follows_the_step_time():
    live = Liveness()
    assert live.stall_timeout() == FLOOR
    beat(live, "worker-0", 0.0, step=0, phase="warmup")
    for k in range(1, 6):
        beat(live, "worker-0", 5.0 * k, step=k)   # a step every 5 s
    assert live.stall_timeout() == pytest.approx(20 * 5.0)
    assert Liveness(stall_timeout=7).stall_timeout() == 7


def test_a_frozen_worker_is_blamed_not_the_peer_waiting_for_it():
    live = Liveness(stall_timeout=8)
    train(live, ["worker-0", "worker-1"], 0.0, 20.0)
    # worker-0 blocks at step 40 (waiting for worker-1's gradients); worker-1 beats once more, then stops
    beat(live, "worker-1", 21.5, step=40, pid=2, rank=1)
    for t in range(21, 32):
        beat(live, "worker-0", float(t), step=40, pid=1)
    running = {"worker-0", "worker-1"}
    assert live.check(27.5, running) is None
    stall = live.check(28.5, running)   # worker-0 is past its timeout first, but worker-1 went quiet
    assert stall.proc == "worker-1" and stall.silent and "no heartbeat for 7 s" in stall.detail
    assert "worker-0 at step 40" in stall.detail


def test_alive_but_stuck_is_a_stall_too():
    live = Liveness(stall_timeout=8)
    last = train(live, ["worker-0"], 0.0, 10.0)
    for t in range(11, 30):
        beat(live, "worker-0", float(t), step=20)
    stall = live.check(29.0, {"worker-0"})
    assert stall.proc == "worker-0" and not stall.silent and "alive but no progress" in stall.detail


def test_startup_and_pauses_get_their_allowance():
    live = Liveness(stall_timeout=8)
    beat(live, "worker-0", 0.0, phase="startup")
    for t in range(1, 300, 2):
        beat(live, "worker-0", float(t), phase="startup")          # imports, waiting for peers: not a stall
    assert live.check(299.0, {"worker-0"}) is None
    assert live.check(STARTUP_GRACE + 1.0, {"worker-0"}).proc == "worker-0"

    live = Liveness(stall_timeout=8)
    last = train(live, ["worker-0"], 0.0, 10.0)
    for t in range(11, 41):
        beat(live, "worker-0", float(t), step=20, phase="checkpoint")   # the first checkpoint: 30 s
    assert live.check(40.0, {"worker-0"}) is None
    beat(live, "worker-0", 41.0, step=21, phase="train")
    for t in range(42, 250):
        beat(live, "worker-0", float(t), step=21, phase="checkpoint")    # the next one may take 5 x 30 s
    assert live.check(42.0 + 149, {"worker-0"}) is None
    assert live.check(42.0 + 151, {"worker-0"}).proc == "worker-0"


def test_servers_only_need_to_beat_and_finished_workers_are_left_alone():
    live = Liveness(stall_timeout=5)
    live.observe("server-0", "server", "h1", {"pid": 9, "phase": "serving"}, 0.0)
    for t in range(1, 100):
        live.observe("server-0", "server", "h1", {"pid": 9, "phase": "serving"}, float(t))
    beat(live, "worker-0", 0.0, step=10, phase="done")
    assert live.check(99.5, {"server-0", "worker-0"}) is None
    stall = live.check(106.0, {"server-0", "worker-0"})
    assert stall.proc == "server-0" and stall.silent
    assert Liveness(stall_timeout=0).check(1e6, {"server-0"}) is None


def test_shared_stream_forgets_a_worker_the_others_went_on_without():
    live = Liveness(stall_timeout=8)
    for t in range(0, 10):
        beat(live, "horovodrun", float(t), step=t, pid=11, rank=0)
        beat(live, "horovodrun", float(t), step=t, pid=12, rank=1)
    # pid 12 dies; after a reset pid 11 trains on alone
    for t in range(10, 40):
        beat(live, "horovodrun", float(t), step=t + (5 if t > 14 else 0), pid=11, rank=0,
             phase="reset" if t <= 14 else "train")
    assert live.check(39.0, {"horovodrun"}) is None

    live = Liveness(stall_timeout=8)
    for t in range(0, 10):
        beat(live, "horovodrun", float(t), step=t, pid=11, rank=0)
        beat(live, "horovodrun", float(t), step=t, pid=12, rank=1)
    for t in range(10, 30):   # pid 12 is stopped: pid 11 waits (and resets) without another step
        beat(live, "horovodrun", float(t), step=9, pid=11, rank=0, phase="reset" if t > 20 else "train")
    stall = live.check(20.0, {"horovodrun"})
    assert stall.proc == "horovodrun" and "rank 1 (pid 12 on h1)" in stall.who and stall.silent


def test_failed_heartbeat_carries_the_error():
    live = Liveness()
    live.observe("worker-1", "worker", "h2", {"pid": 5, "phase": "failed", "error": "RuntimeError: boom"}, 1.0)
    assert live.error_of("worker-1") == "RuntimeError: boom"
    assert live.error_of("worker-0") is None


def test_finished_only_when_every_worker_is_done():
    live = Liveness()
    live.observe("server-0", "server", "h1", {"pid": 9, "phase": "serving"}, 0.0)
    beat(live, "worker-0", 1.0, step=8, phase="done", pid=1)
    beat(live, "worker-1", 1.0, step=7, phase="train", pid=2)
    assert live.finished_since({"server-0", "worker-0", "worker-1"}) is None
    beat(live, "worker-1", 3.0, step=8, phase="done", pid=2)
    assert live.finished_since({"server-0", "worker-1"}) == 3.0
