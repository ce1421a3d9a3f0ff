"""Per-operator profile of one embedding forward of an exported model, before and after the inference fixes.

Arms (each its own process, because MXNet picks its engine when it loads):
- *threaded*: the folded float32 symbol as ``FaceEmbedder(backend='mxnet')`` runs it, MXNet's default
  threaded engine (what every process ran before ``gluonface.machine.use_inference_engine``);
- *naive*: the same graph on MXNet's NaiveEngine (what ``gluonface eval/embed/export`` run on the CPU now);
- *int8*: the INT8 model quantised from the folded oneDNN-form graph (``export.run.int8_candidates``), NaiveEngine;
- *int8, traced graph*: the INT8 model quantised from the traced graph, as before this change, NaiveEngine.
MXNet's profiler (aggregate statistics) times each operator on its own (``MXNET_EXEC_BULK_EXEC_INFERENCE=0``);
the wall time per call is measured without the profiler, in the same process. Untrained weights, BatchNorm
statistics from synthetic faces (``bench_export.face_statistics``), calibration on 64 of them.

    OMP_NUM_THREADS=2 python bench/profile_export.py --models iresnet_tiny mobilefacenet --batches 1 64
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ARMS = {"threaded": {}, "naive": {"MXNET_ENGINE_TYPE": "NaiveEngine"},
        "int8": {"MXNET_ENGINE_TYPE": "NaiveEngine"}, "int8, traced graph": {"MXNET_ENGINE_TYPE": "NaiveEngine"}}


def worker(a):
    import numpy as np
    import mxnet as mx
    sys.path.insert(0, HERE)
    from bench_export import face_statistics, render_set
    from gluonface.export.embedder import FaceEmbedder, bound_forward
    from gluonface.export.quantize import quantize_symbol
    from gluonface.export.run import int8_candidates
    from gluonface.export.symbol import embedding_symbol
    from gluonface.models import get_model
    mx.random.seed(0)
    net = get_model(a.model, embedding_size=128, head="FC")
    net.initialize(mx.init.Xavier())
    faces, _ = render_set(0, 16, 4, seed=1)
    face_statistics(net, faces)
    traced = embedding_symbol(net)
    if a.arm.startswith("int8"):
        graphs = list(int8_candidates(traced, (112, 112)))
        _, graph, exclude = graphs[-1] if a.arm == "int8, traced graph" else graphs[0]
        qsym, qarg, qaux = quantize_symbol(*graph, faces, exclude=exclude)
        forward = bound_forward(qsym, dict(qarg, **qaux), mx.cpu())
    else:
        forward = FaceEmbedder.from_net(net, backend="mxnet")
    out = {}
    for batch in a.batches:
        x = np.random.default_rng(batch).uniform(0, 255, (batch, 3, 112, 112)).astype(np.float32)
        for _ in range(5):
            forward(x)
        calls = max(3, int(200 / batch))
        start = time.perf_counter()
        for _ in range(calls):
            forward(x)
        wall = (time.perf_counter() - start) / calls
        # a file of its own: MXNet replaces the profile file when it writes it (never point it at /dev/null)
        mx.profiler.set_config(profile_all=True, aggregate_stats=True,
                               filename=os.path.join(tempfile.gettempdir(), f"profile_export_{os.getpid()}.json"))
        mx.profiler.set_state("run")
        for _ in range(calls):
            forward(x)
        mx.nd.waitall()
        mx.profiler.set_state("stop")
        stats = json.loads(mx.profiler.dumps(format="json", reset=True))["Time"].get("operator", {})
        ops = {name: s["Total"] / calls for name, s in stats.items() if name not in ("WaitForVar", "DeleteVariable")}
        out[batch] = {"wall_ms": wall * 1e3, "ops_ms": ops}
    print(json.dumps({"arm": a.arm, "model": a.model, "engine": os.environ.get("MXNET_ENGINE_TYPE", "threaded"),
                      "runs": out}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--arm", default="naive")
    ap.add_argument("--model", default="iresnet_tiny")
    ap.add_argument("--models", nargs="+", default=["iresnet_tiny", "mobilefacenet"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--top", type=int, default=8)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    sys.path.insert(0, os.path.dirname(HERE))
    from gluonface.machine import cpu_line
    lines = [f"Per-operator profile of one embedding forward ({cpu_line()}, OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', '?')}, `MXNET_EXEC_BULK_EXEC_INFERENCE=0`; ms per call; "
             f"load average {os.getloadavg()[0]:.1f} at start). Command: `python bench/profile_export.py "
             + " ".join(sys.argv[1:]) + "`", ""]
    for model in a.models:
        runs = {}
        for arm, extra in ARMS.items():
            env = {**os.environ, "MXNET_EXEC_BULK_EXEC_INFERENCE": "0", **extra}
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--arm", arm, "--model",
                                   model, "--batches", *map(str, a.batches)], capture_output=True, text=True,
                                  env=env)
            found = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode or not found:
                raise SystemExit(f"{arm} worker failed: {proc.stderr[-2000:]}")
            runs[arm] = json.loads(found[-1])["runs"]
        for batch in a.batches:
            lines += [f"#### {model}, batch {batch}", "",
                      "| arm | wall ms/call | operator ms/call (sum) | largest operators (ms/call) |", "|---|---|---|---|"]
            for arm in ARMS:
                r = runs[arm][str(batch)]
                top = sorted(r["ops_ms"].items(), key=lambda kv: -kv[1])[:a.top]
                lines.append(f"| {arm} | {r['wall_ms']:.3f} | {sum(r['ops_ms'].values()):.3f} | "
                             + ", ".join(f"{n} {v:.3f}" for n, v in top) + " |")
            lines.append("")
        print("\n".join(lines[-(len(a.batches) * (len(ARMS) + 4)):]), flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
