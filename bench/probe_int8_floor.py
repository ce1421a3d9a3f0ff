"""What bounds INT8 at batch 1: MXNet's fixed cost per operator call, and onnxruntime's own INT8 as the alternative.

Three measurements, one process, NaiveEngine (as ``gluonface eval/embed`` run), ``OMP_NUM_THREADS`` threads:
1. *floor*: a chain of N fused oneDNN 1x1 convolutions on a (1, 8, 4, 4) tensor (no arithmetic to speak of),
   bound in an executor and called like ``FaceEmbedder``'s MXNet forward: the fixed cost of N operator calls.
   N defaults to the operator count of the INT8 graph of ``--model``.
2. *model*: the folded float32 symbol and the INT8 symbol of ``--model`` (``bench_embedder.export``: untrained,
   BatchNorm statistics of synthetic faces, calibration on 128 of them), batch 1 of uint8 pixels, through
   ``FaceEmbedder(backend='mxnet')``.
3. *onnxruntime INT8*: the same float32 ONNX quantised by onnxruntime's own static quantiser (QDQ and
   QOperator formats, per-channel int8 weights, uint8 activations, the same calibration faces), timed
   against the float32 session at batch 1 and 64.
Rounds alternate the arms; the minimum and the median of the rounds are reported.

    OMP_NUM_THREADS=2 python bench/probe_int8_floor.py --model iresnet_tiny
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def per_call_us(f, n):
    for _ in range(max(5, n // 10)):
        f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1e6


def rounds_of(arms, rounds, n):
    got = {k: [] for k in arms}
    for _ in range(rounds):
        for k, f in arms.items():
            got[k].append(per_call_us(f, n))
    return {k: (min(v), statistics.median(v)) for k, v in got.items()}


def emit(lines, out=None):
    """Print the markdown ``lines``; with ``out``, append them to that file too."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write("\n" + text)


def export(model, work):
    """``(prefix, faces)``: bench_embedder's export (untrained, face statistics, ONNX and INT8) and its faces."""
    sys.path.insert(0, HERE)
    from bench_embedder import CALIB_FACES, export as export_model
    from bench_export import render_set
    prefix, note = export_model(model, work)
    if not os.path.isfile(prefix + "-int8-symbol.json"):
        raise SystemExit(f"{model}: {note}")
    return prefix, render_set(*CALIB_FACES)[0]


def floor_forward(n_ops):
    import numpy as np
    import mxnet as mx
    from gluonface.export.embedder import bound_forward
    y = mx.sym.var("data")
    for i in range(n_ops):
        y = mx.sym.Convolution(y, kernel=(1, 1), num_filter=8, name=f"c{i}")
    sym = y.optimize_for("MKLDNN")
    shapes, _, _ = sym.infer_shape(data=(1, 8, 4, 4))
    rng = np.random.default_rng(0)
    params = {n: mx.nd.array(rng.uniform(-0.1, 0.1, s).astype(np.float32))
              for n, s in zip(sym.list_arguments(), shapes) if n != "data"}
    forward = bound_forward(sym, params, mx.cpu())
    x = rng.uniform(0, 1, (1, 8, 4, 4)).astype(np.float32)
    return lambda: forward(x)


def ort_int8(onnx_path, faces, work, threads):
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from gluonface.evaluate.verification import row_cosines
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    name = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    calib = [np.ascontiguousarray(f.transpose(2, 0, 1)[None], dtype=np.float32) for f in faces[:64]]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x}

    pre = os.path.join(work, "pre.onnx")
    quant_pre_process(onnx_path, pre)
    paths = {"float32": onnx_path}
    for fmt, qf in (("QDQ", QuantFormat.QDQ), ("QOperator", QuantFormat.QOperator)):
        paths[f"INT8 {fmt}"] = os.path.join(work, f"ort-int8-{fmt}.onnx")
        quantize_static(pre, paths[f"INT8 {fmt}"], Reader(), quant_format=qf, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    sessions = {k: ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    out = {}
    for batch in (1, 64):
        x = np.stack([calib[i % len(calib)][0] for i in range(batch)])
        ref = sessions["float32"].run(None, {name: x})[0]
        cos = {}
        for k, s in sessions.items():
            y = s.run(None, {name: x})[0]
            cos[k] = float(row_cosines(ref, y).min())
        arms = {k: (lambda s=s: s.run(None, {name: x})) for k, s in sessions.items()}
        t = rounds_of(arms, 7, 400 if batch == 1 else 8)
        out[batch] = {k: {"us": t[k], "min_cosine": cos[k]} for k in sessions}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="iresnet_tiny")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--out", help="append the markdown here")
    a = ap.parse_args()
    from gluonface.machine import cpu_line, use_inference_engine
    use_inference_engine("cpu")
    import numpy as np
    from gluonface.export.embedder import FaceEmbedder
    threads = int(os.environ.setdefault("OMP_NUM_THREADS", "2"))
    work = tempfile.mkdtemp(prefix="probe_int8_")
    prefix, faces = export(a.model, work)
    f32 = FaceEmbedder.from_path(prefix, backend="mxnet", threads=threads)
    i8 = FaceEmbedder.from_path(prefix + "-int8", backend="mxnet", threads=threads)
    # the graph that runs: fed uint8 pixels, the INT8 model drops its input quantisation (uint8_input_form)
    with open(prefix + "-int8-symbol.json") as f:
        n_ops = sum(1 for n in json.load(f)["nodes"] if n["op"] != "null") - (i8.input_dtype == np.uint8)
    x = np.ascontiguousarray(faces[0].transpose(2, 0, 1)[None])   # uint8 pixels, as images come
    t = rounds_of({"float32 symbol": lambda: f32(x), "INT8 symbol": lambda: i8(x),
                   f"{n_ops} tiny operators": floor_forward(n_ops)}, a.rounds, a.calls)
    ort = ort_int8(prefix + ".onnx", faces, work, threads)
    floor = t[f"{n_ops} tiny operators"][0]
    f, q = t["float32 symbol"][0], t["INT8 symbol"][0]
    lines = [f"### INT8 at batch 1: the per-operator floor (`bench/probe_int8_floor.py --model {a.model}`)", "",
             f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {cpu_line()}, OMP_NUM_THREADS={threads}, MXNet NaiveEngine, "
             f"load average at end {os.getloadavg()[0]:.1f}. Untrained {a.model}, face statistics, one face as uint8 "
             f"pixels; µs per call, minimum (median) of {a.rounds} alternating rounds.", "",
             "| arm | µs per call, batch 1 |", "|---|---|"]
    lines += [f"| {k} | {v[0]:.1f} ({v[1]:.1f}) |" for k, v in t.items()]
    lines += ["", f"INT8 / float32 at batch 1: **{f / q:.2f}×**. The INT8 graph has {n_ops} operators; "
              f"{n_ops} operators that do no arithmetic cost {floor:.0f} µs, {100 * floor / q:.0f} % of the INT8 call. "
              f"Without that floor the arithmetic ratio is {(f - floor) / max(q - floor, 1e-9):.2f}×; with it, "
              f"1.5× would need the INT8 arithmetic to take at most {f / 1.5 - floor:.0f} µs "
              f"(it takes {q - floor:.0f}).", "",
              "onnxruntime's own static INT8 quantisation of the same float32 ONNX (per-channel int8 weights, uint8 "
              "activations, the calibration faces), µs per call, minimum (median) of 7 rounds:", "",
              "| session | batch 1 | INT8 speed-up | min cosine to float32 | batch 64 | INT8 speed-up | min cosine |",
              "|---|---|---|---|---|---|---|"]
    for k in ort[1]:
        b1, b64 = ort[1][k], ort[64][k]
        lines.append(f"| {k} | {b1['us'][0]:.0f} ({b1['us'][1]:.0f}) | {ort[1]['float32']['us'][0] / b1['us'][0]:.2f}× | "
                     f"{b1['min_cosine']:.4f} | {b64['us'][0]:.0f} ({b64['us'][1]:.0f}) | "
                     f"{ort[64]['float32']['us'][0] / b64['us'][0]:.2f}× | {b64['min_cosine']:.4f} |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
