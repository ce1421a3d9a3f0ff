"""INT8 against float32 on each oneDNN code path this CPU can take: AVX-512 (VNNI where present) and AVX2.

An exported PREFIX (float32 symbol + ``PREFIX-int8``) is timed through ``FaceEmbedder`` on NaiveEngine, batch 1
and 64 of uint8 pixels (as images come: the float32 forms pay their float copy, the INT8 ones take them as they
are), every form alternating over rounds, once per code path: the machine's default and ``DNNL_MAX_CPU_ISA=AVX2``
(oneDNN's AVX2 kernels: no VNNI, INT8 through vpmaddubsw; gluonface's INT8 runner is put on its AVX2 path there
too). Forms: float32 on MXNet, float32 on ``auto`` (MXNet or onnxruntime, whichever it measures faster), INT8 on
MXNet, INT8 on gluonface's native runner. Each path is its own process (oneDNN reads the cap when it loads).
With ``--bin``, the held-out accuracy of the forms is measured on each path too (``gluonface eval``'s code).

    OMP_NUM_THREADS=2 python bench/bench_int8_paths.py [PREFIX] [--bin heldout.bin]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from probe_int8_floor import emit, export  # noqa: E402  (bench/ is not a package)
PATHS = {"default (AVX-512 where present)": {}, "AVX2 (DNNL_MAX_CPU_ISA=AVX2)": {"DNNL_MAX_CPU_ISA": "AVX2"}}


FORMS = ("float32", "float32 auto", "INT8", "INT8 native")


def worker(a):
    from gluonface.machine import use_inference_engine
    use_inference_engine("cpu")
    import numpy as np
    from gluonface.export.embedder import FaceEmbedder
    from gluonface.ops import int8net
    if os.environ.get("DNNL_MAX_CPU_ISA") == "AVX2":
        int8net.set_isa("avx2")
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    forms = {"float32": FaceEmbedder.from_path(a.prefix, backend="mxnet", threads=threads),
             "float32 auto": FaceEmbedder.from_path(a.prefix, backend="auto", threads=threads),
             "INT8": FaceEmbedder.from_path(a.prefix + "-int8", backend="mxnet", threads=threads),
             "INT8 native": FaceEmbedder.from_path(a.prefix + "-int8", backend="native", threads=threads)}
    out = {"speed": {}, "accuracy": {}, "native_isa": int8net.isa()}
    for batch in (1, 64):
        x = np.random.default_rng(batch).integers(0, 256, (batch, 3, 112, 112), dtype=np.uint8)
        got = {k: [] for k in forms}
        for _ in range(a.rounds):
            for k, emb in forms.items():
                for _ in range(3):
                    emb(x)
                n, start = 0, time.perf_counter()
                while n < 3 or time.perf_counter() - start < a.seconds:
                    emb(x)
                    n += 1
                got[k].append(n * batch / (time.perf_counter() - start))
        out["speed"][batch] = {k: statistics.median(v) for k, v in got.items()}
        for k in ("INT8", "INT8 native"):
            for base in ("float32", "float32 auto"):
                out["speed"][f"{batch} {k} / {base}"] = statistics.median(q / f for q, f in zip(got[k], got[base]))
        out["speed"][f"{batch} auto runs"] = forms["float32 auto"].backend_report().get("runs", {})
    if a.bin:
        from gluonface.evaluate.verification import verify_bin
        for k, emb in forms.items():
            if k != "float32 auto":
                out["accuracy"][k] = verify_bin(emb, a.bin)["accuracy"] * 100
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix", nargs="?", help="exported PREFIX with PREFIX-int8 beside it (default: export an "
                    "untrained iresnet_tiny with face statistics here)")
    ap.add_argument("--bin")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=0.4)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    from gluonface.machine import cpu_line
    threads = os.environ.setdefault("OMP_NUM_THREADS", "2")
    if a.prefix is None:
        import tempfile
        a.prefix = export("iresnet_tiny", tempfile.mkdtemp(prefix="bench_int8_paths_"))[0]
    res = {}
    for name, env in PATHS.items():
        cmd = [sys.executable, os.path.abspath(__file__), a.prefix, "--worker", "--rounds", str(a.rounds),
               "--seconds", str(a.seconds)] + (["--bin", a.bin] if a.bin else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **env))
        found = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        if proc.returncode or not found:
            raise SystemExit(f"{name} failed: {proc.stderr[-2000:]}")
        res[name] = json.loads(found[-1])
    lines = ["### INT8 against float32 on both oneDNN code paths (`bench/bench_int8_paths.py`)", "",
             f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {cpu_line()}, OMP_NUM_THREADS={threads}, MXNet NaiveEngine, "
             f"`FaceEmbedder` on uint8 pixels; model `{os.path.basename(a.prefix)}`; images/s, median of {a.rounds} "
             f"alternating rounds of {a.seconds:g} s; ratios are medians of the rounds' ratios; load average at end "
             f"{os.getloadavg()[0]:.1f}.", "",
             "| code path (native runner's) | batch | float32 MXNet | float32 auto (runs) | INT8 MXNet | INT8 native "
             "| INT8 MXNet / float32 MXNet | INT8 native / float32 MXNet | INT8 native / float32 auto |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        s = r["speed"]
        for b in ("1", "64"):
            runs = s[f"{b} auto runs"].get("1-8" if b == "1" else ">8", "?")
            lines.append(
                f"| {name} ({r['native_isa']}) | {b} | {s[b]['float32']:.1f} | {s[b]['float32 auto']:.1f} ({runs}) | "
                f"{s[b]['INT8']:.1f} | {s[b]['INT8 native']:.1f} | {s[f'{b} INT8 / float32']:.2f}× | "
                f"**{s[f'{b} INT8 native / float32']:.2f}×** | **{s[f'{b} INT8 native / float32 auto']:.2f}×** |")
    if a.bin:
        lines += ["", "Held-out verification accuracy (%), same processes:", "",
                  "| code path | float32 | INT8 MXNet | INT8 native |", "|---|---|---|---|"]
        for name, r in res.items():
            acc = r["accuracy"]
            lines.append(f"| {name} | {acc['float32']:.2f} | {acc['INT8']:.2f} | {acc['INT8 native']:.2f} |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
