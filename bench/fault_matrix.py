"""Run the fault matrix (tests/distributed/test_dist_faults*.py) and write what it measured.

    .venv/bin/python bench/fault_matrix.py [--parallel 1] [--out bench/results/faults.md] [-- PYTEST_ARGS]

Every cell is a real `gluonface launch` job hit by one fault once it has published its first checkpoint;
the tests record, per cell, the launcher's exit status and the seconds from the fault to the launcher's
exit (for a killed launcher: until the last process of the job is gone; for ``--elastic`` cells where a
worker dies: until the survivor has finished the run). ``--parallel 1`` (the default here) runs one cell
at a time so the times are not inflated by a neighbouring job; the test suite runs two at a time.
This is a record of behaviour and latency, not a performance benchmark: no ratio applies.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = ["tests/distributed/test_dist_faults.py", "tests/distributed/test_dist_faults_hosts.py"]
WHAT = {
    "kill-worker": "SIGKILL worker-1",
    "kill-loader": "SIGKILL worker-1's data-loader child (the worker raises)",
    "raise": "exception inside step 5 on rank 1 (GLUONFACE_TEST_FAULT)",
    "stop-worker": "SIGSTOP worker-1 (`--stall-timeout 8`)",
    "kill-server": "SIGKILL the server (horovod: the launcher, host of the rendezvous; elastic: horovodrun)",
    "kill-scheduler": "SIGKILL the scheduler",
    "disk-full": "run dir's tmpfs full before the next checkpoint",
    "corrupt-record": "a record of global batch 5 is not an image",
    "kill-launcher": "SIGKILL the launcher",
}


def cpu_line():
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    simd = [f for f in flags if f.startswith(("avx512", "avx2", "amx"))]
    return f"{model}, {os.cpu_count()} cores, flags {' '.join(sorted(simd)) or 'n/a'}"


def render(rows, args, seconds, passed, load_before, load_after):
    lines = [
        "## Fault matrix (`bench/fault_matrix.py`)", "",
        f"Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {platform.node()}: {cpu_line()}; Python "
        f"{platform.python_version()}. Load average {load_before:.1f} before, {load_after:.1f} after (other "
        "engineers' jobs shared the 2 cores: times include waiting for the CPU).",
        f"Reproduce: `.venv/bin/python bench/fault_matrix.py --parallel {args.parallel}` (runs `pytest "
        f"{' '.join(TESTS)}` with `GLUONFACE_FAULT_PARALLEL={args.parallel}`). {passed}; the whole run took "
        f"{seconds / 60:.1f} min.", "",
        "2 workers of `gluonface train` (iresnet_tiny, 32x32 images, global batch 8, a checkpoint every 2 "
        "steps; kvstore: 1 server). The fault hits once the first checkpoint is published. Seconds: from "
        "the fault to the launcher's exit (killed launcher: until no process of the job is left on any host; "
        "`--elastic` where a worker dies: until the survivor finished the run, 16 steps).", "",
        "| engine / fault | where | what was done | exit | outcome | seconds |",
        "|---|---|---|---:|---|---:|",
    ]
    for r in rows:
        fault = r["cell"].split(" / ")[1]
        lines.append(f"| {r['cell']} | {r['host']} | {WHAT.get(fault, fault)} | {r['exit']} | {r['outcome']} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "faults.md"))
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "cells.jsonl")
        env = dict(os.environ, GLUONFACE_FAULT_REPORT=report, GLUONFACE_FAULT_PARALLEL=str(args.parallel))
        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS,
                               *args.pytest_args], cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - t0
        summary = (proc.stdout.strip().splitlines() or ["(no pytest output)"])[-1].strip("= ")
        rows = []
        if os.path.exists(report):
            with open(report, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f]
    order = {c: i for i, c in enumerate(["kvstore", "kvstore-async", "horovod", "elastic"])}
    rows.sort(key=lambda r: (r["host"] != "local", order.get(r["cell"].split(" / ")[0], 9), r["cell"]))
    text = render(rows, args, seconds, summary, load_before, os.getloadavg()[0])
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    if proc.returncode:
        print(proc.stdout[-6000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
