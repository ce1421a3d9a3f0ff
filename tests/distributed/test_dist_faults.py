"""The fault matrix on one machine: every engine × every kind of fault, with the real `gluonface train`.

Engines: kvstore dist_sync, kvstore dist_async, horovod, horovod --elastic (2 workers; kvstore: 1 server).
Faults, injected once the job has published its first checkpoint (step 2):

* kill-worker: SIGKILL worker-1;          kill-loader: SIGKILL worker-1's data-loader child (the worker raises);
* raise: an exception inside step 5 on rank 1 (``GLUONFACE_TEST_FAULT``, test-only);
* stop-worker: SIGSTOP worker-1 (a stall; ``--stall-timeout 8``);
* kill-server: SIGKILL the server: kvstore server-0; horovod: the launcher, which holds Horovod's rendezvous
  server (its workers must leave by themselves: heartbeat dead-man switch); elastic: horovodrun, the driver;
* kill-scheduler: SIGKILL the ps-lite scheduler (kvstore only);
* disk-full: the run directory's file system (a small tmpfs) fills up before the next checkpoint;
* corrupt-record: a record of global batch 5 is not an image (a corrupt rec read mid-epoch).

Each cell asserts the launcher's exit status, the time from the fault to its exit (<= 60 s; stalls: the
stall timeout + 60 s), that no process carrying the job's tag is left, that the message names the process
and the reason, and that the last checkpoint loads. ``--elastic`` cells where a worker dies expect the
survivor to finish the run (exit 0); every other cell expects the job to end. Some cells also run
``--resume auto`` to the end.
"""
import errno
import os
import re
import signal
import time

import pytest

import fault_cells as fc
from gluonface.engine.checkpoint import load_backbone

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

FAULTS = ("kill-worker", "kill-loader", "raise", "stop-worker", "kill-server", "kill-scheduler", "disk-full",
          "corrupt-record")
CELLS = [(e, f) for e in fc.ENGINES for f in FAULTS if not (f == "kill-scheduler" and e not in ("kvstore",
                                                                                                "kvstore-async"))]
STALL_TIMEOUT = 8
TEARDOWN_LIMIT = 60
RAISE_STEP = 5
CONTINUE_STEPS = 16            # elastic cells where the survivor goes on: the run's length
RESUME = {("kvstore", "disk-full"), ("horovod", "kill-server"), ("kvstore", "stop-worker")}
TMPFS_BYTES = 6 << 20          # a few checkpoints of the tiny model (~0.7 MB each) and the logs
TMPFS_LEFT = 100 << 10         # room left when "the disk fills up": the logs fit, backbone.params (330 kB) not


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faultdata")
    return {"clean": fc.write_rec(root / "train"), "corrupt": fc.write_rec(root / "corrupt", corrupt=True)}


class SmallDisk:
    """A small tmpfs for the run directory (root only); ``fill`` leaves ``TMPFS_LEFT`` bytes free."""

    def __init__(self, path):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        import subprocess
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", self.path],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); the RLIMIT_FSIZE variant is "
                        "tests/unit/test_engine_checkpoint_full.py")
        self.filler = os.path.join(self.path, "filler")

    def _free_bytes(self):
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self):
        """Fill in chunks while the job keeps writing: one big write could meet ENOSPC itself if the job's
        checkpoint took the space between ``statvfs`` and the write. On ENOSPC, give back what should stay."""
        chunk = b"\0" * (64 << 10)
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        size = 0
        try:
            while self._free_bytes() > TMPFS_LEFT:
                try:
                    n = os.write(fd, chunk[:min(len(chunk), self._free_bytes() - TMPFS_LEFT)])
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                if n == 0:
                    break
                size += n
        finally:
            os.close(fd)
        short = TMPFS_LEFT - self._free_bytes()
        if short > 0:
            os.truncate(self.filler, max(0, size - short))

    def free(self):
        os.remove(self.filler)

    def close(self):
        import subprocess
        subprocess.run(["umount", "-l", self.path], capture_output=True)


def _expect_continue(engine, fault):
    return engine == "elastic" and fault in ("kill-worker", "kill-loader", "raise")


def _inject(fault, job, engine, disk):
    """Inject ``fault``; returns the wall-clock time of the fault (None: known only from the output)."""
    tag = job.tag
    victim = job.wait_for(lambda: fc.worker_pid(tag, engine), 30, "worker-1")
    if fault in ("kill-worker", "stop-worker"):
        os.kill(victim, signal.SIGSTOP if fault == "stop-worker" else signal.SIGKILL)
    elif fault == "kill-loader":
        os.kill(job.wait_for(lambda: fc.children(victim), 30, "a loader child")[0], signal.SIGKILL)
    elif fault == "kill-server":
        if engine.startswith("kvstore"):
            os.kill(fc.role_pid(tag, "server"), signal.SIGKILL)
        else:   # horovod: the launcher itself (Horovod's rendezvous server); elastic: horovodrun
            os.kill(job.proc.pid if engine == "horovod" else _pid_of(job, "horovodrun"), signal.SIGKILL)
    elif fault == "kill-scheduler":
        os.kill(fc.role_pid(tag, "scheduler"), signal.SIGKILL)
    elif fault == "disk-full":
        disk.fill()
    else:
        return None   # raise / corrupt-record: the fault fires inside the job
    return time.time()


def _pid_of(job, name):
    import json
    with open(os.path.join(job.logs, "processes.json")) as f:
        return json.load(f)[name]["pid"]


def _fault_time(fault, job, t_fault):
    """When an internal fault fired: the injected exception says so; a corrupt record is timed by the
    worker log that reports it (the launcher writes log lines as they arrive)."""
    if t_fault is not None:
        return t_fault
    found = re.search(r"injected test fault at step \d+ on rank \d+ at ([0-9.]+)", job.output())
    assert found, job.output()[-3000:]
    return float(found.group(1))


def _wait_end(job, fault, bound):
    """Wait for the launcher; for a corrupt record also note when the error first shows in a worker log."""
    seen = None
    deadline = time.monotonic() + bound + 60
    while job.proc.poll() is None and time.monotonic() < deadline:
        if fault == "corrupt-record" and seen is None and _logs_say(job, "does not decode as an image"):
            seen = time.time()
        time.sleep(0.05)
    code = job.finish(timeout=5)
    end = time.time()
    if fault == "corrupt-record" and seen is None:
        seen = end   # it failed between two polls
    return code, end, seen


def _logs_say(job, text):
    for name in os.listdir(job.logs):
        if name.endswith(".log"):
            with open(os.path.join(job.logs, name), errors="replace") as f:
                if text in f.read():
                    return True
    return False


def _check_message(out, engine, fault, victim):
    if fault == "kill-worker":
        assert re.search(r"process worker-1 .* died: killed by SIGKILL", out)
    elif fault == "kill-loader":
        assert "died: exit code 1 (RuntimeError: 1 loader worker(s) died" in out and "worker-1" in out
    elif fault == "raise":
        assert re.search(r"process worker-\d .* died: exit code 1 \(InjectedFault: injected test fault at step 5 on "
                         r"rank 1", out)
    elif fault == "stop-worker":
        assert re.search(rf"process (worker-1|horovodrun rank \d \(pid {victim} ).* stalled: no heartbeat", out)
    elif fault == "kill-server":
        name = "server-0" if engine.startswith("kvstore") else "horovodrun"
        assert re.search(rf"process {name} .* died: killed by SIGKILL", out)
    elif fault == "kill-scheduler":
        assert re.search(r"process scheduler .* died: killed by SIGKILL", out)
    elif fault == "disk-full":
        assert "could not write checkpoint step-" in out and "--resume auto" in out and "df -h" in out
    elif fault == "corrupt-record":
        assert "does not decode as an image" in out and "gluonface pack" in out


def run_cell(cell, recs, root):
    """Run one cell; returns its evidence (asserted by ``test_fault``). Setup failures raise."""
    engine, fault = cell
    cfg = fc.write_config(root / "cfg.yaml", recs["corrupt" if fault == "corrupt-record" else "clean"])
    disk = SmallDisk(root / "disk") if fault == "disk-full" else None
    run_dir = os.path.join(disk.path if disk else str(root), "run")
    extra = []
    if fault == "stop-worker":
        extra += ["--stall-timeout", str(STALL_TIMEOUT)]
    if _expect_continue(engine, fault):
        extra += ["--set", f"train.max_steps={CONTINUE_STEPS}"]
    env = dict(os.environ, GLUONFACE_TEST_FAULT=f"raise,step={RAISE_STEP},rank=1") if fault == "raise" else None

    def start(attempt):
        logs = root / ("logs" if attempt == 0 else f"logs-start{attempt + 1}")
        return fc.Job(fc.launcher_argv(cfg, engine, run_dir, logs, *extra), logs=logs, run_dir=run_dir, env=env)

    ev = {"run_dir": run_dir}
    try:
        job, ev["start_crashes"] = fc.start_until_checkpoint(start, run_dir)
    except BaseException:
        if disk is not None:
            disk.close()
        raise
    try:
        ev["victim"] = fc.worker_pid(job.tag, engine)
        t_fault = _inject(fault, job, engine, disk)
        ev["bound"] = TEARDOWN_LIMIT + (STALL_TIMEOUT if fault == "stop-worker" else 0)
        ev["code"], t_end, seen = _wait_end(job, fault, ev["bound"])
        t_fault = seen if fault == "corrupt-record" else _fault_time(fault, job, t_fault)
        ev["out"], tag = job.output(), job.tag
        launcher_killed = (engine, fault) == ("horovod", "kill-server")
        ev["left"] = fc.leftovers(tag, wait=TEARDOWN_LIMIT if launcher_killed else 2)
        ev["seconds"] = (time.time() if launcher_killed else t_end) - t_fault
        crashed = _expect_continue(engine, fault) and ev["code"] != 0
        fc.report(f"{engine} / {fault}", host="local", exit=ev["code"], seconds=round(ev["seconds"], 1),
                  outcome=fc.outcome(_expect_continue(engine, fault), ev["code"], ev["out"]),
                  start_crashes=ev["start_crashes"])
        ev["latest"] = fc.latest_step(run_dir)
        try:
            ev["loaded_step"] = load_backbone(run_dir, "latest")[1]["step"]
        except Exception as exc:   # asserted in the test
            ev["loaded_step"] = exc
        ev["incomplete"] = _incomplete_published(run_dir)
        if cell in RESUME or crashed:   # crashed: the survivor died in native code (a known limit)
            ev["resume"] = _resume(cfg, engine, run_dir, root, disk, CONTINUE_STEPS if crashed else None)
        return ev
    finally:
        job.kill()
        if disk is not None:
            disk.close()


def _incomplete_published(run_dir):
    """Published checkpoint directories with a missing state.json or a cut-short .params file (a
    ``.partial`` staging directory left by a failed write is not published: readers never look at it)."""
    from gluonface.engine.params_file import check_complete
    root = os.path.join(run_dir, "checkpoints")
    bad = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not (name.startswith("step-") and not name.endswith(".partial") and os.path.isdir(path)):
            continue
        files = os.listdir(path)
        if "state.json" not in files or any(check_complete(os.path.join(path, f)) for f in files
                                            if f.endswith(".params")):
            bad.append(name)
    return bad


def _cost(cell):
    """Rough seconds a cell takes beyond start-up (the batch starts the long ones first)."""
    return (30 if cell in RESUME else 0) + (STALL_TIMEOUT if cell[1] == "stop-worker" else 0) + \
        (20 if _expect_continue(*cell) else 0)


@pytest.fixture(scope="module")
def matrix(request, recs, tmp_path_factory):
    def run(cell):
        return run_cell(cell, recs, tmp_path_factory.mktemp(f"{cell[0]}-{cell[1]}"))
    return fc.Batches(request, "test_fault", lambda p: (p["engine"], p["fault"]), lambda cell: cell[0], run, _cost)


@pytest.mark.parametrize("engine,fault", CELLS, ids=[f"{e}-{f}" for e, f in CELLS])
def test_fault(matrix, engine, fault):
    ev = matrix.result((engine, fault))
    out = ev["out"]
    assert ev["left"] == {}, ev["left"]
    if _expect_continue(engine, fault):
        if ev["code"] != 0:   # only the documented native crash of a survivor, and then resume must finish
            assert fc.NATIVE_CRASH.search(out), out[-4000:]
        else:
            assert ev["latest"] == CONTINUE_STEPS
    else:
        _check_exit(ev["code"], engine, fault, out)
        if not (engine == "horovod" and fault == "kill-server"):   # the launcher itself was killed
            _check_message(out, engine, fault, ev["victim"])
    assert ev["seconds"] <= ev["bound"], f"{ev['seconds']:.1f} s from the fault to the end"
    assert not isinstance(ev["loaded_step"], Exception), ev["loaded_step"]
    assert ev["loaded_step"] >= fc.CHECKPOINT_EVERY
    assert ev["incomplete"] == []
    if "resume" in ev:
        code, text, step, expected = ev["resume"]
        assert code == 0, text[-4000:]
        assert f"resumed from {ev['run_dir']}" in text and step == expected


def _check_exit(code, engine, fault, out):
    expected = {"kill-worker": 137, "kill-loader": 1, "raise": 1, "stop-worker": 124, "kill-server": 137,
                "kill-scheduler": 137, "disk-full": 2, "corrupt-record": 2}[fault]
    if engine == "horovod" and fault == "kill-server":
        expected = -signal.SIGKILL           # the launcher itself was killed
    elif engine == "elastic" and fault in ("disk-full", "corrupt-record"):
        assert code not in (0, 124), out[-4000:]   # horovodrun's own code once no worker is left
        return
    assert code == expected, out[-4000:]


def _resume(cfg, engine, run_dir, root, disk, stop=None):
    """``--resume auto`` to ``stop`` (default two steps further); returns (exit code, output, latest step,
    expected step)."""
    if disk is not None:
        disk.free()
    stop = stop or fc.latest_step(run_dir) + 2
    job = fc.Job(fc.launcher_argv(cfg, engine, run_dir, root / "logs-resume", "--resume", "auto", "--set",
                                  f"train.max_steps={stop}"), logs=root / "logs-resume", run_dir=run_dir)
    try:
        code = job.finish(timeout=200)
        return code, job.output(), fc.latest_step(run_dir), stop
    finally:
        job.kill()
