"""Embedding throughput through ``FaceEmbedder`` against a bare onnxruntime session, one runtime per process.

bench_export.py times every form round-robin inside one process; there several onnxruntime sessions and
MXNet's OpenMP team share 2 cores, and a session's threads still spin after its turn, so two sessions of the
same file differed by up to 1.6x in one run. Here every arm is a fresh process that loads one model and times
one thing; arms alternate over rounds and the ratio is taken per round. Arms:
- *bare session*: ``onnxruntime.InferenceSession`` on the exported ONNX, ``run`` on a float32 batch (no gluonface);
- *FaceEmbedder auto*: ``FaceEmbedder.from_path(prefix)``, the default (per batch class the faster of MXNet and
  onnxruntime, decided on its first calls, which are part of the warm-up here), in a process that called
  ``gluonface.machine.use_inference_engine`` first as ``gluonface eval/embed`` do;
- *FaceEmbedder mxnet*: ``backend='mxnet'``, same process setup;
- *INT8*: the INT8 export (``backend='mxnet'``), same process setup.
Each arm times batch 1 and batch 64 (raw forward ``emb(x)`` on float32 NCHW, no flip) for ``--seconds`` each.

    OMP_NUM_THREADS=2 python bench/bench_embedder.py --models iresnet_tiny mobilefacenet --rounds 5
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CALIB_FACES = (0, 32, 4, 3)   # render_set(first_id, n_ids, per_id, seed) of the calibration faces
ARMS = ("bare session", "FaceEmbedder auto", "FaceEmbedder mxnet", "INT8")


def worker(a):
    if a.arm != "bare session":
        sys.path.insert(0, os.path.dirname(HERE))
        from gluonface.machine import use_inference_engine
        use_inference_engine("cpu")
    import numpy as np
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    if a.arm == "bare session":
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(a.prefix + ".onnx", sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        forward = lambda x: sess.run(None, {name: x})[0]  # noqa: E731
        chose = ""
    else:
        from gluonface.export.embedder import FaceEmbedder
        path = a.prefix + "-int8" if a.arm == "INT8" else a.prefix
        emb = FaceEmbedder.from_path(path, backend="auto" if a.arm == "FaceEmbedder auto" else "mxnet",
                                     threads=threads)
        forward = emb
    out = {}
    for batch in (1, 64):
        x = np.random.default_rng(batch).uniform(0, 255, (batch, 3, 112, 112)).astype(np.float32)
        for _ in range(12):   # auto decides within its first 10 calls of a batch class
            forward(x)
        n, start = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - start < a.seconds:
            forward(x)
            n += 1
        out[batch] = n * batch / (time.perf_counter() - start)
    if a.arm != "bare session":
        chose = emb.describe_backend()
    print(json.dumps({"arm": a.arm, "images_per_s": out, "backend": chose}), flush=True)


def export(model, work):
    """An untrained network with BatchNorm statistics of synthetic faces, exported with ONNX and INT8."""
    sys.path.insert(0, HERE)
    import mxnet as mx
    from bench_export import face_statistics, render_set
    from gluonface.data.record import RecordWriter
    from gluonface.errors import GluonFaceError
    from gluonface.export.run import export_model
    from gluonface.models import get_model
    import cv2
    faces, labels = render_set(*CALIB_FACES)
    rec = os.path.join(work, "calib")
    w = RecordWriter(rec)
    for img, lab in zip(faces, labels):
        w.add_image(cv2.imencode(".png", img[:, :, ::-1])[1].tobytes(), int(lab))
    w.close(image_size=(112, 112))
    mx.random.seed(0)
    net = get_model(model, embedding_size=128, head="FC")
    net.initialize(mx.init.Xavier())
    face_statistics(net, faces)
    net.hybridize(static_alloc=True, static_shape=True)
    prefix = os.path.join(work, model)
    try:
        meta = export_model(net, prefix, onnx=True, int8=True, calib=rec, calib_images=128)
        note = f"INT8 graph: {meta['checks']['int8_graph']['quantised']}"
    except GluonFaceError as exc:
        export_model(net, prefix, onnx=True)
        note = f"INT8 refused by the float32 check: {str(exc)[:200]}"
    return prefix, note


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--arm")
    ap.add_argument("--prefix")
    ap.add_argument("--models", nargs="+", default=["iresnet_tiny", "mobilefacenet"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    sys.path.insert(0, os.path.dirname(HERE))
    from gluonface.machine import cpu_line
    threads = os.environ.setdefault("OMP_NUM_THREADS", "2")
    lines = ["## FaceEmbedder against a bare onnxruntime session, one runtime per process (`bench/bench_embedder.py`)",
             "", f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {cpu_line()}, OMP_NUM_THREADS={threads} (onnxruntime "
             f"intra-op threads the same). Command: `OMP_NUM_THREADS={threads} python bench/bench_embedder.py "
             + " ".join(sys.argv[1:]) + f"`. Load average at start {os.getloadavg()[0]:.1f}.", ""]
    work = tempfile.mkdtemp(prefix="bench_embedder_")
    for model in a.models:
        prefix, note = export(model, work)
        arms = [arm for arm in ARMS if arm != "INT8" or os.path.isfile(prefix + "-int8-symbol.json")]
        rounds, chose = [], {}
        for r in range(a.rounds):
            res = {}
            for arm in arms[r % len(arms):] + arms[:r % len(arms)]:   # rotate the order every round
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--arm", arm,
                                       "--prefix", prefix, "--seconds", str(a.seconds)],
                                      capture_output=True, text=True)
                found = [x for x in proc.stdout.splitlines() if x.startswith("{")]
                if proc.returncode or not found:
                    raise SystemExit(f"{arm} failed: {proc.stderr[-2000:]}")
                got = json.loads(found[-1])
                res[arm] = {int(k): v for k, v in got["images_per_s"].items()}
                chose.setdefault(arm, []).append(got["backend"])
            rounds.append(res)
            print(f"{model} round {r + 1}: " + ", ".join(f"{k} {v[1]:.0f}/{v[64]:.0f}" for k, v in res.items()),
                  flush=True)
        lines += [f"### {model} ({note})", "",
                  "| arm | batch 1 img/s | ratio to bare session (median, min–max of rounds) | batch 64 img/s | ratio |",
                  "|---|---|---|---|---|"]
        for arm in arms:
            cells = []
            for b in (1, 64):
                med = statistics.median(r[arm][b] for r in rounds)
                per = sorted(r[arm][b] / r["bare session"][b] for r in rounds)
                cells += [f"{med:.1f}", f"{statistics.median(per):.2f}× ({per[0]:.2f}–{per[-1]:.2f})"]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines += ["", "FaceEmbedder auto chose, per process: " + "; ".join(sorted(set(chose["FaceEmbedder auto"]))),
                  ""]
        print("\n".join(lines[-(len(arms) + 5):]), flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
