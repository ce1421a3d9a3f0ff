"""Rerun every benchmark in bench/ and gather their figures into bench/RESULTS.md.

Each `bench/bench_*.py` measures one area against a baseline run in the same process or run and writes its
figures, with the command that reproduces them, to `bench/results/<area>.md`. This script runs them one after
another (never in parallel: they would measure each other) and then concatenates the result files under a
header naming the machine and the date. `--collect-only` skips the runs and only rebuilds RESULTS.md.
"""
import argparse
import datetime
import glob
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def machine_line():
    from gluonface.machine import cpu_line
    return f"{cpu_line()}, Python {platform.python_version()}, {platform.system()}"


def collect(out_path):
    parts = sorted(glob.glob(os.path.join(HERE, "results", "*.md")))
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = ["# Benchmark results", "",
             f"Assembled {now} by `make bench` (or `python bench/run_all.py --collect-only`) from "
             "`bench/results/*.md`. Each section names its machine, date and the command that reproduces it.",
             f"Machine of this assembly: {machine_line()}.", ""]
    for path in parts:
        with open(path, encoding="utf-8") as f:
            lines += [f.read().rstrip(), ""]
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return parts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument("--only", nargs="*", help="bench script names to run (default: all)")
    args = parser.parse_args(argv)
    failed = []
    if not args.collect_only:
        for script in sorted(glob.glob(os.path.join(HERE, "bench_*.py"))):
            name = os.path.basename(script)
            if args.only and name not in args.only and name[:-3] not in args.only:
                continue
            print(f"== {name}", flush=True)
            if subprocess.run([sys.executable, script], cwd=os.path.dirname(HERE)).returncode != 0:
                failed.append(name)
    parts = collect(os.path.join(HERE, "RESULTS.md"))
    print(f"bench/RESULTS.md assembled from {len(parts)} result file(s)")
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
