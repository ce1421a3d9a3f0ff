"""Where a batch-1 call of gluonface's INT8 runner goes: microseconds per layer, one thread.

The runner (``gluonface.ops.int8net``) times each layer of ``reps`` runs of one face itself (the input copy is
the remainder). Printed beside it: the whole call at 1 and 2 threads and MXNet's INT8 and float32 forwards of
the same files at batch 1, each the minimum (median) of alternating rounds.

    OMP_NUM_THREADS=2 python bench/profile_int8_runner.py [PREFIX] [--out FILE]
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from probe_int8_floor import emit, export, per_call_us  # noqa: E402  (bench/ is not a package)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix", nargs="?", help="exported PREFIX with PREFIX-int8 beside it (default: export an "
                    "untrained iresnet_tiny with face statistics here)")
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out")
    a = ap.parse_args()
    threads = int(os.environ.setdefault("OMP_NUM_THREADS", "2"))
    from gluonface.machine import cpu_line, use_inference_engine
    use_inference_engine("cpu")
    from gluonface.export.embedder import FaceEmbedder, probe_faces
    from gluonface.ops import int8net
    if a.prefix is None:
        import tempfile
        a.prefix = export("iresnet_tiny", tempfile.mkdtemp(prefix="profile_int8_runner_"))[0]
    native = FaceEmbedder.from_path(a.prefix + "-int8", backend="native", threads=threads)
    net = native._forward.runner
    face = probe_faces(net.input_shape[1:], n=1)
    us = net.profile(face[0], reps=a.reps)
    arms = {"runner, 1 thread": lambda: net(face, threads=1),
            f"runner, {threads} threads": lambda: net(face, threads=threads),
            "MXNet INT8": FaceEmbedder.from_path(a.prefix + "-int8", backend="mxnet").__call__,
            "MXNet float32": FaceEmbedder.from_path(a.prefix, backend="mxnet").__call__}
    calls = {k: [] for k in arms}
    for _ in range(a.rounds):
        for k, f in arms.items():
            calls[k].append(per_call_us((lambda f=f: f(face)) if k.startswith("MXNet") else f, 300))
    lines = [f"### INT8 runner, batch 1, per layer (`bench/profile_int8_runner.py`, model "
             f"`{os.path.basename(a.prefix)}`)", "",
             f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {cpu_line()}, runner path {int8net.isa()}, one thread, mean of "
             f"{a.reps} runs of one synthetic face; whole calls: minimum (median) of {a.rounds} alternating rounds; "
             f"load average at end {os.getloadavg()[0]:.1f}.", "",
             "| # | layer | kernel, stride | in (C, H, W) | out | fused | MMAC | µs | GMAC/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, (d, t) in enumerate(zip(net.describe(), us)):
        lines.append(f"| {i} | {d['kind']} | {d['kernel']} s{d['stride']} | {d['in']} | {d['out']} | "
                     f"{', '.join(d['fused']) or '-'} | {d['macs'] / 1e6:.2f} | {t:.1f} | {d['macs'] / t / 1e3:.1f} |")
    total = sum(d["macs"] for d in net.describe())
    lines += [f"| | all layers | | | | | {total / 1e6:.2f} | {us.sum():.1f} | {total / us.sum() / 1e3:.1f} |", "",
              "| whole call, batch 1 | µs |", "|---|---|"]
    lines += [f"| {k} | {min(v):.1f} ({statistics.median(v):.1f}) |" for k, v in calls.items()]
    emit(lines, a.out)


if __name__ == "__main__":
    main()
