"""``gluonface export``: a run directory's backbone -> symbol checkpoint (+ ONNX, + INT8) + ``export.json``.

Every artefact is checked against the training network before the command succeeds: the symbol must
reproduce its embeddings within 1e-5 and ONNX Runtime within 1e-4 (L2-normalised embeddings, a fixed
random batch of raw pixels), so a broken export fails here rather than in deployment.
"""
import datetime
import json
import os
import time

import numpy as np

from gluonface.errors import GluonFaceError

SYMBOL_TOL = 1e-5
ONNX_TOL = 1e-4


def resolve_which(run_dir, which="auto"):
    """'auto' means best/ when the run kept one, else the latest checkpoint."""
    if which != "auto":
        return which
    return "best" if os.path.isfile(os.path.join(run_dir, "best", "backbone.params")) else "latest"


def _probe_batch(input_size, n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 3) + tuple(input_size)).astype(np.float32)


def _normed(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def throughput(forward, input_size, batch_size=32, min_seconds=2.0, min_iters=3):
    """Images per second of ``forward`` on a random batch of uint8 pixels, as images come (after one warm-up
    call): each form pays for its own input conversion (float32 graphs a float copy, INT8 graphs none)."""
    x = np.rint(_probe_batch(input_size, batch_size, seed=1)).astype(np.uint8)
    forward(x)
    iters, start = 0, time.perf_counter()
    while iters < min_iters or time.perf_counter() - start < min_seconds:
        forward(x)
        iters += 1
    return iters * batch_size / (time.perf_counter() - start)


def check_options(int8=False, calib=None, pairs=None, onnx_input="raw", **_):
    """Refuse option combinations that cannot work before any model is loaded."""
    from gluonface.export.convention import check_convention
    check_convention(onnx_input)
    if int8 and not calib:
        raise GluonFaceError("--int8 needs calibration images; fix: add --calib path/to/train.rec")
    if pairs and not os.path.isfile(str(pairs)):
        raise GluonFaceError(f"pair set {pairs} does not exist; fix: make one with `gluonface pairs`")


def _export_onnx(exported, out_prefix, input_size, x, ref, files, forms, checks, onnx_input, fold, props):
    """The ONNX file for ``onnx_input`` clients (``gluonface.export.convention``), checked the way they read it."""
    import onnx
    from gluonface.export.convention import CONVENTIONS, client_graph, router_convention
    from gluonface.export.embedder import FaceEmbedder
    from gluonface.export.onnx import export_onnx
    sym, arg, aux, input_norm = client_graph(*exported["traced"], onnx_input, (1, 3) + input_size, fold=fold)
    files["onnx"] = export_onnx(sym, arg, aux, f"{out_prefix}.onnx", (1, 3) + input_size, input_norm=input_norm,
                                metadata=props)
    mean, std = CONVENTIONS[onnx_input]
    router = router_convention(onnx.load(files["onnx"]))
    if router != (mean, std):
        raise GluonFaceError(f"insightface's model router would feed {files['onnx']} mean {router[0]}, std "
                             f"{router[1]}, not the {onnx_input} convention's {mean}, {std}; fix: report it (the "
                             "graph's first node names are wrong)")
    checks["onnx_insightface_router_mean_std"] = list(router)
    forms["onnx"] = FaceEmbedder.from_path(files["onnx"])
    checks["onnx_max_abs_diff"] = float(np.abs(_normed(forms["onnx"](x)) - _normed(ref)).max())
    if checks["onnx_max_abs_diff"] > ONNX_TOL:
        raise GluonFaceError(f"ONNX Runtime output differs from MXNet by {checks['onnx_max_abs_diff']:.2e} "
                             f"(> {ONNX_TOL}); fix: an operator is translated wrongly, report it")


def int8_candidates(traced, input_size):
    """Float32 graphs to quantise, best first: ``(name, (sym, arg, aux), excluded node names)``.

    1. the folded graph in oneDNN's form (``fold.lower_for_onednn``): BatchNorms folded, PReLU as
       depthwise convolutions + relu + sum, so quantisation turns every operator into an INT8 oneDNN kernel
       (VNNI where the CPU has it) with no float32 layer in between. Quantising the traced graph left each
       BatchNorm, PReLU and elementwise add in float32, with a dequantise/requantise pair around each: that
       is why INT8 was slower than float32 (0.54-0.63x, bench/results/export.md), not a missing VNNI.
    2. the same with the embedding head in float32: the dense layers and the convolutions whose output is
       1x1 (MobileFaceNet's global depthwise convolution). MXNet 1.9.1's INT8 path lost MobileFaceNet's
       embedding there (cosine 0.27 to float32 on synthetic faces; 0.987 with the head in float32);
    3. the traced graph as trained.
    The first whose embeddings pass ``check_against_float32`` is kept.
    """
    from gluonface.export.fold import fold_for_inference, lower_for_onednn
    from gluonface.export.graph import SymbolGraph, int_tuple
    shape = (1, 3) + tuple(input_size)
    lowered = lower_for_onednn(*fold_for_inference(*traced, shape), shape)
    g = SymbolGraph(lowered[0], dict(lowered[1], **lowered[2]), shape)

    def in_head(i, node):
        if node["op"] == "FullyConnected":
            return True
        out = g.shape([i])
        return (node["op"] == "Convolution" and out is not None and tuple(out[2:]) == (1, 1)
                and max(int_tuple(g.attr([i], "kernel")) or (1,)) > 1)
    head = tuple(n["name"] for i, n in enumerate(g.nodes) if in_head(i, n))
    yield "folded, oneDNN form", lowered, ()
    if head:
        yield "folded, oneDNN form, embedding head float32", lowered, head
    yield "traced", traced, ()


def _export_int8(exported, out_prefix, input_size, x, ref, files, forms, checks, calib, calib_images, calib_mode):
    import mxnet as mx
    from gluonface.export.embedder import FaceEmbedder, bound_forward
    from gluonface.export.quantize import calibration_images, check_against_float32, quantize_symbol
    from gluonface.export.symbol import save_symbol
    images = calibration_images(calib, calib_images, image_size=input_size)
    attempts, error = [], None
    for name, graph, exclude in int8_candidates(exported["traced"], input_size):
        qsym, qarg, qaux = quantize_symbol(*graph, images, calib_mode=calib_mode, exclude=exclude)
        try:
            report = check_against_float32(bound_forward(qsym, dict(qarg, **qaux), mx.cpu()), forms["symbol"],
                                           images)
        except GluonFaceError as exc:
            attempts.append({"graph": name, "passed": False, "error": str(exc).split(";")[0]})
            error = exc
            continue
        attempts.append({"graph": name, "passed": True, "min_cosine": report["min_cosine"]})
        break
    else:   # nothing passed: no INT8 file is written (a model below the bar is not left for deployment)
        tried = "; ".join(f"{a['graph']}: {a['error']}" for a in attempts)
        raise GluonFaceError(f"no INT8 form of this network passes the float32 check ({tried}); nothing was "
                             "kept. fix: calibrate with more images or --calib-mode entropy, or deploy the "
                             "float32 model") from error
    q = save_symbol(qsym, qarg, qaux, f"{out_prefix}-int8")
    forms["int8"] = FaceEmbedder.from_path(f"{out_prefix}-int8", backend="mxnet")
    checks["int8_vs_fp32_on_calibration"] = report
    checks["int8_graph"] = {"quantised": name, "float32_layers": list(exclude), "attempts": attempts}
    files.update(int8_symbol=q["symbol"], int8_params=q["params"])
    checks["int8_min_cosine_to_fp32"] = float(np.sum(_normed(forms["int8"](x)) * _normed(ref), axis=1).min())
    checks["int8_calibration"] = {"rec": str(calib), "images": int(len(images)), "mode": calib_mode}
    native = _check_native_int8(qsym, dict(qarg, **qaux), input_size, images, forms["symbol"], checks)
    fp32_speed = throughput(forms["symbol"], input_size)
    int8_speed = throughput(forms["int8"], input_size)
    checks["speed_images_per_s"] = {"symbol_fp32": fp32_speed, "int8": int8_speed, "batch_size": 32,
                                    "int8_speedup": int8_speed / fp32_speed}
    if native is not None:
        native_speed = throughput(native, input_size)
        checks["speed_images_per_s"].update(int8_native=native_speed, int8_native_speedup=native_speed / fp32_speed)
        forms["int8_native"] = FaceEmbedder(native, input_size, "int8", backend="native")   # verified with --pairs


def _check_native_int8(qsym, qparams, input_size, images, fp32_forward, checks):
    """The INT8 graph on gluonface's native runner against float32 on the calibration images, recorded in
    ``checks`` (``FaceEmbedder`` does not use the runner for a model that failed here); returns its forward
    (uint8 batches) when it passed, else None. A graph the runner does not run is noted, not an error."""
    from gluonface.export.embedder import native_threads
    from gluonface.export.quantize import check_against_float32
    from gluonface.ops import int8net
    threads = native_threads(None)
    try:
        net = int8net.Int8Net(qsym, qparams, (3,) + tuple(input_size))
    except GluonFaceError as exc:
        checks["int8_native_vs_fp32_on_calibration"] = {"skipped": str(exc).split("; fix:")[0]}
        return None

    def native(x):
        return net(np.ascontiguousarray(np.rint(x), dtype=np.uint8) if x.dtype != np.uint8 else x, threads=threads)
    native.input_dtype = np.dtype(np.uint8)
    try:
        report = check_against_float32(native, fp32_forward, images)
    except GluonFaceError as exc:
        checks["int8_native_vs_fp32_on_calibration"] = {"passed": False, "error": str(exc).split(";")[0]}
        return None
    checks["int8_native_vs_fp32_on_calibration"] = dict(report, passed=True, isa=int8net.isa())
    return native


def _verify_forms(forms, pairs, input_size, batch_size, progress):
    """Verification accuracy of every exported form on one pair set (+ the INT8 drop in points)."""
    from gluonface.evaluate.verification import verify_bin
    out = {}
    for kind, emb in forms.items():
        m = verify_bin(emb, pairs, batch_size=batch_size, image_size=input_size, progress=progress)
        out[kind] = {"accuracy": m["accuracy"], "accuracy_std": m["accuracy_std"], "auc": m["auc"],
                     "tar_at_far": {str(k): v for k, v in m["tar_at_far"].items()}}
    for kind in ("int8", "int8_native"):
        if kind in out:
            out[f"{kind}_accuracy_drop_points"] = 100.0 * (out["symbol"]["accuracy"] - out[kind]["accuracy"])
    out["pairs"] = str(pairs)
    return out


def _write_meta(out_prefix, net, info, input_size, embedding_size, files, checks, verification, onnx_props=None):
    import mxnet as mx
    model = info.get("model") or {}
    meta = {
        "backbone": _backbone(net, info),
        "embedding_size": int(embedding_size),
        "input_size": list(input_size),
        "input": "data: (N, 3, H, W) float32 raw RGB 0..255 (symbol and INT8 files)",
        "normalisation": "in-graph (x - 127.5) / 128" if model.get("input_norm", True) else "none",
        "onnx_input": _onnx_spec(onnx_props),
        "output": "fc1_output: (N, E) float32, not L2-normalised",
        "model": model,
        "config_hash": info.get("config_hash"),
        "checkpoint": info.get("path"),
        "step": info.get("step"),
        "files": {k: os.path.basename(v) for k, v in files.items()},
        "checks": checks,
        "verification": verification,
        "mxnet": mx.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(os.path.join(os.path.dirname(os.path.abspath(out_prefix)), "export.json"), "w",
              encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    return meta


def _onnx_spec(props):
    """export.json's summary of the ONNX input convention (None without ONNX)."""
    if not props:
        return None
    return {"convention": props["input_convention"], "mean": float(props["input_mean"]),
            "std": float(props["input_std"]), "color_order": props["input_color_order"]}


def _backbone(net, info):
    return (info.get("model") or {}).get("name", type(net).__name__)


def export_model(net, out_prefix, *, info=None, input_size=(112, 112), onnx=False, onnx_input="raw", int8=False,
                 calib=None, calib_images=256, calib_mode="naive", pairs=None, batch_size=64, progress=False,
                 fold=True):
    """Export a Gluon embedding network and verify every artefact.

    Args:
        net: initialised HybridBlock, (N, 3, H, W) float32 raw RGB -> (N, E).
        out_prefix: writes ``OUT-symbol.json``/``OUT-0000.params``, ``OUT.onnx`` (``onnx``),
            ``OUT-int8-symbol.json``/``-0000.params`` (``int8``) and ``export.json`` in OUT's directory.
        info: the ``load_backbone`` info (model section, config hash, checkpoint path) for export.json.
        onnx_input: the ONNX file's input convention, ``raw`` (RGB 0..255, normalised by leading Sub/Mul
            nodes insightface detects) or ``normalized`` (``(x - 127.5) / 127.5``); see
            ``gluonface.export.convention``.
        calib: rec used to calibrate INT8 (required with ``int8``); ``calib_images`` drawn from it.
        pairs: optional ``.bin`` pair set: verification accuracy of each exported form goes to export.json.
        fold: write the graph folded for inference (``gluonface.export.fold``: BatchNorm into convolutions,
            one PReLU operator, input normalisation into the first unpadded convolution); the symbol and ONNX
            checks below hold either way.

    Returns:
        the export.json dict.
    """
    from gluonface.evaluate.verification import gluon_forward
    from gluonface.export.embedder import FaceEmbedder
    from gluonface.export.convention import metadata_props
    from gluonface.export.symbol import export_symbol
    check_options(int8=int8, calib=calib, pairs=pairs, onnx_input=onnx_input)
    info, input_size = dict(info or {}), tuple(input_size)
    x = _probe_batch(input_size)
    ref = gluon_forward(net)(x)
    exported = export_symbol(net, out_prefix, fold=fold, input_size=input_size)
    files = {"symbol": exported["symbol"], "params": exported["params"]}
    forms = {"symbol": FaceEmbedder.from_path(out_prefix, backend="mxnet")}
    checks = {"symbol_max_abs_diff": float(np.abs(_normed(forms["symbol"](x)) - _normed(ref)).max()),
              "folded": bool(fold)}
    if checks["symbol_max_abs_diff"] > SYMBOL_TOL:
        raise GluonFaceError(f"the exported symbol differs from the network by {checks['symbol_max_abs_diff']:.2e}"
                             f" (> {SYMBOL_TOL}); fix: the network is not fully hybridizable, report it")
    props = None
    if onnx:
        props = metadata_props(onnx_input, input_size, ref.shape[1], _backbone(net, info))
        _export_onnx(exported, out_prefix, input_size, x, ref, files, forms, checks, onnx_input, fold, props)
    if int8:
        _export_int8(exported, out_prefix, input_size, x, ref, files, forms, checks, calib, calib_images,
                     calib_mode)
    verification = _verify_forms(forms, pairs, input_size, batch_size, progress) if pairs else {}
    return _write_meta(out_prefix, net, info, input_size, ref.shape[1], files, checks, verification, props)


def export_run(run_dir, out_prefix, which="auto", **kw):
    """Load a run's backbone (``which`` = auto | best | latest | step) and ``export_model`` it."""
    from gluonface.engine.checkpoint import load_backbone
    check_options(**kw)
    if not os.path.isdir(str(run_dir)):
        raise GluonFaceError(f"run directory {run_dir} does not exist; fix: pass the directory `gluonface "
                             "train` wrote")
    net, info = load_backbone(str(run_dir), resolve_which(str(run_dir), which))
    info = {k: v for k, v in info.items() if k != "config"}
    return export_model(net, str(out_prefix), info=info, **kw)


def export_and_report(run_dir, out_prefix, which="auto", **kw):
    """``export_run`` and print what was written and checked (the ``gluonface export`` command); returns 0."""
    meta = export_run(run_dir, out_prefix, which, **kw)
    folder = os.path.dirname(os.path.abspath(out_prefix))
    print(f"exported {meta['backbone']} (E={meta['embedding_size']}, step {meta['step']}) to {folder}:")
    for kind, name in meta["files"].items():
        print(f"  {kind:12s} {name}")
    checks = meta["checks"]
    print(f"  symbol vs training network: max |diff| {checks['symbol_max_abs_diff']:.2e} (normalised)")
    if "onnx_max_abs_diff" in checks:
        print(f"  onnxruntime vs MXNet:        max |diff| {checks['onnx_max_abs_diff']:.2e}")
        spec = meta["onnx_input"]
        print(f"  ONNX input: {spec['convention']}, feed (RGB - {spec['mean']:g}) / {spec['std']:g} (in the model's "
              "metadata_props; insightface's model_zoo reads the same from its node names)")
    if "speed_images_per_s" in checks:
        s = checks["speed_images_per_s"]
        c = checks["int8_vs_fp32_on_calibration"]
        print(f"  INT8 vs fp32 on {c['images']} calibration faces: min cosine {c['min_cosine']:.4f}, mean "
              f"{c['mean_cosine']:.4f}")
        print(f"  INT8: min cosine to fp32 {checks['int8_min_cosine_to_fp32']:.4f}, {s['int8']:.1f} vs "
              f"{s['symbol_fp32']:.1f} img/s fp32 (x{s['int8_speedup']:.2f}, batch {s['batch_size']})")
        native = checks.get("int8_native_vs_fp32_on_calibration", {})
        if "int8_native" in s:
            print(f"  INT8 on gluonface's runner ({native.get('isa')}): min cosine to fp32 {native['min_cosine']:.4f} "
                  f"on the calibration faces, {s['int8_native']:.1f} img/s (x{s['int8_native_speedup']:.2f} fp32)")
        elif native:
            print(f"  INT8 on gluonface's runner: not used ({native.get('skipped') or native.get('error')})")
    for kind, v in meta["verification"].items():
        if isinstance(v, dict):
            print(f"  {kind} accuracy on {os.path.basename(meta['verification']['pairs'])}: "
                  f"{100 * v['accuracy']:.2f} %")
    for kind, what in (("int8", "INT8"), ("int8_native", "INT8 on gluonface's runner")):
        if f"{kind}_accuracy_drop_points" in meta["verification"]:
            print(f"  {what} accuracy drop: {meta['verification'][f'{kind}_accuracy_drop_points']:.2f} points")
    print(f"  details: {os.path.join(folder, 'export.json')}")
    return 0
