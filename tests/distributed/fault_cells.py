"""One cell of the fault matrix: a real ``gluonface launch`` job of ``gluonface train``, a fault injected once
the job has published its first checkpoint, and the evidence (exit status, time from the fault to the
launcher's exit, processes left with the job's tag, the last checkpoint).

Processes are found by the tag every process of a launch carries (``GLUONFACE_JOB=<id>`` in
``/proc/PID/environ``, children included), so the same helpers work for local, netns and ssh jobs (all
"hosts" here share this machine's process table). ``GLUONFACE_FAULT_REPORT=<file>`` appends one JSON
line per cell (bench/fault_matrix.py turns them into bench/results/faults.md).
"""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np

from gluonface.data.record import RecordWriter
from gluonface.data.sampler import epoch_permutation

SEED = 7
IMAGES, IDENTITIES, SIZE, BATCH, WORKERS = 64, 8, 32, 4, 2
STEPS_PER_EPOCH = IMAGES // (BATCH * WORKERS)
CORRUPT_STEP = 5          # the global batch (of epoch 0) holding the corrupt record; the first checkpoint is at 2
CHECKPOINT_EVERY = 2
BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "base.yaml")

CONFIG = """base: {base}
data: {{rec: {rec}, batch_size: {batch}, num_workers: 1, flip: false}}
model: {{name: iresnet_tiny, embedding_size: 16}}
loss: {{name: arcface, s: 16.0, m2: 0.2}}
optim: {{lr: 0.05, base_batch: 8, scale_lr: false, schedule: constant}}
train: {{epochs: 100000, max_steps: 100000, devices: cpu, log_every: 1, checkpoint_every: {every}, progress_bar: false,
         seed: {seed}, keep_checkpoints: 2}}
eval: {{bins: []}}
"""

ENGINES = {
    "kvstore": ("--engine", "kvstore", "--servers", "1"),
    "kvstore-async": ("--engine", "kvstore", "--servers", "1", "--kvstore", "dist_async"),
    "horovod": ("--engine", "horovod"),
    "elastic": ("--engine", "horovod", "--elastic", "--min-workers", "1"),
}


def corrupt_position():
    """Dataset position of the first image of global batch ``CORRUPT_STEP`` in epoch 0."""
    return int(epoch_permutation(IMAGES, SEED, 0)[CORRUPT_STEP * BATCH * WORKERS])


def write_rec(prefix, corrupt=False):
    """The tiny training rec (random 32×32 PNGs); ``corrupt``: one record's bytes are not an image."""
    rng = np.random.default_rng(0)
    bad = corrupt_position() if corrupt else -1
    writer = RecordWriter(str(prefix))
    for i in range(IMAGES):
        png = cv2.imencode(".png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))[1].tobytes()
        writer.add_image(b"\x00not an image, bit rot\x00" * 8 if i == bad else png, i // (IMAGES // IDENTITIES))
    writer.close(image_size=(SIZE, SIZE))
    return str(prefix)


def write_config(path, rec):
    with open(path, "w", encoding="utf-8") as f:
        f.write(CONFIG.format(base=os.path.abspath(BASE), rec=rec, batch=BATCH, every=CHECKPOINT_EVERY, seed=SEED))
    return str(path)


def _read(path, binary=False):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data if binary else data.decode(errors="replace")


def tagged(tag):
    """``{pid: {"ppid", "cmd", "env"}}`` of the live (not zombie) processes carrying ``GLUONFACE_JOB=tag``."""
    mark = f"GLUONFACE_JOB={tag}".encode()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        environ = _read(f"/proc/{pid}/environ", binary=True)
        stat = _read(f"/proc/{pid}/stat")
        if not environ or not stat or mark not in environ.split(b"\0"):
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if fields[0] == "Z":
            continue
        env = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
        argv = (_read(f"/proc/{pid}/cmdline", binary=True) or b"").decode(errors="replace").split("\0")
        found[int(pid)] = {"ppid": int(fields[1]), "cmd": " ".join(argv).strip(), "argv": argv,
                           "env": {k.decode(errors="replace"): v.decode(errors="replace") for k, v in env.items()}}
    return found


ASYNC_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "async_train_worker.py")


def _is_trainer(info):
    argv = info["argv"]   # not horovodrun, whose argv holds the worker command too
    return argv[1:4] == ["-m", "gluonface", "train"] or argv[1:2] == [ASYNC_WORKER]


def workers(tag):
    """Training workers of the job (not their data-loader children, which share their command line)."""
    procs = tagged(tag)
    return {pid: info for pid, info in procs.items()
            if _is_trainer(info) and not (info["ppid"] in procs and _is_trainer(procs[info["ppid"]]))}


def worker_pid(tag, engine, index=1):
    """Pid of the worker the cell faults: worker-<index> (elastic: the one on the second host alias)."""
    for pid, info in workers(tag).items():
        env = info["env"]
        if engine == "elastic":
            if env.get("HOROVOD_HOSTNAME") == ("localhost" if index else "127.0.0.1"):
                return pid
        elif env.get("GLUONFACE_WORKER_INDEX", env.get("HOROVOD_RANK")) == str(index):
            return pid
    return None


def children(pid):
    out = []
    for child in filter(str.isdigit, os.listdir("/proc")):
        stat = _read(f"/proc/{child}/stat")
        if stat and int(stat.rsplit(")", 1)[-1].split()[1]) == pid:
            out.append(int(child))
    return out


def role_pid(tag, role):
    """Pid of the kvstore ``scheduler`` or ``server`` of the job."""
    for pid, info in tagged(tag).items():
        if info["env"].get("DMLC_ROLE") == role and "gluonface.parallel.server" in info["cmd"]:
            return pid
    return None


def latest_step(run_dir):
    name = _read(os.path.join(run_dir, "checkpoints", "latest"))
    return int(name.strip().split("-")[1]) if name and name.strip() else None


class EndedEarly(AssertionError):
    """The job ended before the test injected anything; ``output`` is the launcher's whole output."""

    def __init__(self, message, output):
        super().__init__(message)
        self.output = output


def start_crashed_natively(exc):
    """True when ``exc`` is an ``EndedEarly`` whose output shows a worker dying in native code (SIGSEGV /
    SIGABRT) before any fault: a start-up crash inside Horovod/MXNet, not what a fault cell tests."""
    return isinstance(exc, EndedEarly) and bool(NATIVE_CRASH.search(exc.output))


def start_until_checkpoint(make_job, run_dir, attempts=2):
    """``(job, start_crashes)``: ``make_job(attempt)``'s job once it has published its first checkpoint.

    A worker that dies in native code before any fault is not what a fault cell tests: the job starts again on
    a clean run directory, at most ``attempts`` times, and the crashes' output is returned for the report. Any
    other early end fails at once. (The start-up crash seen once in ~100 elastic starts was Horovod 0.28.1's
    broadcast use-after-free, which gluonface no longer calls: gluonface.parallel.horovod_ops.)
    """
    crashes = []
    for attempt in range(attempts):
        job = make_job(attempt)
        try:
            job.wait_for_checkpoint()
            return job, crashes
        except AssertionError as exc:
            job.kill()
            if not start_crashed_natively(exc) or attempt + 1 == attempts:
                raise
            crashes.append(exc.output[-2000:])
            shutil.rmtree(run_dir, ignore_errors=True)


class Job:
    """A ``gluonface launch`` subprocess. ``argv`` is the whole launcher command line; the log dir holds
    processes.json (with the job tag)."""

    def __init__(self, argv, *, logs, run_dir, env=None, cwd=None):
        self.argv, self.logs, self.run_dir = list(argv), str(logs), str(run_dir)
        self.out_path = os.path.join(os.path.dirname(self.logs), os.path.basename(self.logs) + ".launcher.txt")
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.started = time.monotonic()
        self.ended = None

    @property
    def tag(self):
        table = json.loads(_read(os.path.join(self.logs, "processes.json")) or "{}")
        return next(iter(table.values()))["job"] if table else None

    def wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise EndedEarly(f"the job ended ({self.proc.returncode}) before {what}:\n{self.output()[-3000:]}",
                                 self.output())
            time.sleep(0.05)
        raise AssertionError(f"no {what} after {timeout} s:\n{self.output()[-3000:]}")

    def wait_for_checkpoint(self, timeout=150):
        return self.wait_for(lambda: latest_step(self.run_dir), timeout, "first checkpoint")

    def finish(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the launcher still ran {timeout} s after the fault:\n{self.output()[-3000:]}")
        self.ended = time.monotonic()
        return self.proc.returncode

    def output(self):
        self.out.flush()
        return _read(self.out_path) or ""

    def kill(self):
        """Last resort after a failed assertion: stop the launcher and everything with its tag."""
        tag = self.tag
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in tagged(tag) if tag else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def leftovers(tag, wait=2.0):
    """Processes of the job still alive ``wait`` seconds after the launcher exited (zombies excluded)."""
    deadline = time.monotonic() + wait
    while True:
        left = tagged(tag)
        if not left or time.monotonic() > deadline:
            return {pid: info["cmd"] for pid, info in left.items()}
        time.sleep(0.1)


# a survivor's death in native code after a peer failed (cluster/README.md, Known limits)
NATIVE_CRASH = re.compile(r"Segmentation fault|exit with status code 13[49]|Exit code: 13[49]\b|"
                          r"killed by SIG(SEGV|ABRT)|Fatal Python error")


def outcome(expect_continue, code, out):
    if not expect_continue:
        return "ended"
    if code == 0:
        return "continued"
    return "survivor crashed in native code (known limit); --resume auto finished" if NATIVE_CRASH.search(out) \
        else "ended"


def report(cell, **fields):
    path = os.environ.get("GLUONFACE_FAULT_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(cell=cell, **fields)) + "\n")


def launcher_argv(cfg, engine, run_dir, logs, *extra, python=sys.executable):
    """``gluonface launch`` of ``gluonface train``; for kvstore-async of ``async_train_worker.py`` (``gluonface
    train`` refuses dist_async: see that file), which gets the ``--set`` overrides itself."""
    argv = [python, "-m", "gluonface", "launch", cfg, *ENGINES[engine], "--workers", str(WORKERS),
            "--set", f"train.run_dir={run_dir}", "--log-dir", str(logs), "--timeout", "240", *extra]
    if engine == "kvstore-async":
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        sets += ["dist.engine=kvstore", "dist.kvstore=dist_async"]
        worker = [python, ASYNC_WORKER, cfg] + [w for item in sets for w in ("--set", item)]
        argv += ["--exec", " ".join(shlex.quote(w) for w in worker)]
    return argv


PARALLEL = int(os.environ.get("GLUONFACE_FAULT_PARALLEL", "2"))   # cells run at a time (1 for clean timings)


class Batches:
    """Runs the selected cells of a parametrized test in groups, ``PARALLEL`` at a time, on first use.

    Most of a cell is waiting (for start-up on a busy machine, for a stall timeout, for teardown), so two
    jobs at a time roughly halve the matrix's wall time. ``run(cell)`` returns the cell's evidence; the
    test then asserts on it. A group (e.g. one engine) is one batch, which keeps each batch well inside
    pytest's per-test timeout (it runs in the setup of the group's first test).

    Args:
        request: the requesting fixture's ``request`` (module scope).
        test_name: the parametrized test whose selected items form the cells.
        cell_of: ``callspec.params -> cell`` (hashable). group_of: ``cell -> group``.
        run: ``cell -> evidence``. cost: ``cell -> seconds`` estimate (longest first).
    """

    def __init__(self, request, test_name, cell_of, group_of, run, cost=lambda cell: 0):
        items = [i for i in request.session.items
                 if getattr(i, "originalname", None) == test_name and i.module is request.module]
        self.cells = [cell_of(i.callspec.params) for i in items]
        self.group_of, self.run, self.cost = group_of, run, cost
        self.results = {}

    def result(self, cell):
        if cell not in self.results:
            group = [c for c in self.cells if self.group_of(c) == self.group_of(cell) and c not in self.results]
            group = sorted(set(group) | {cell}, key=self.cost, reverse=True)
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=max(1, PARALLEL)) as pool:
                futures = {c: pool.submit(self.run, c) for c in group}
            for c, future in futures.items():
                self.results[c] = future.exception() or future.result()
        outcome = self.results[cell]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
