"""Embedding throughput of one trained network as Gluon (hybridized), exported symbol, ONNX Runtime and INT8.

What it does, in one run:
1. Trains a backbone briefly on synthetic identities (``gluonface.data.synthetic.render_image``; ArcFace
   loss, SGD, cosine lr), unless ``--run-dir`` names a `gluonface train` run to use instead.
2. Exports it with ``gluonface.export.run.export_model`` (symbol + ONNX + INT8 calibrated on training
   images) and scores every form on a held-out pair set of unseen identities: the INT8 accuracy drop.
3. Measures images/s at batch 1 and 64 for the four forms. Forms are timed round-robin over several
   rounds and the median is kept, so load from other processes hits all forms alike; the baseline of
   every ratio is the faster of two ONNX Runtime graphs (the exported, folded ONNX and the unfolded traced
   one) measured in the same rounds.
4. Runs the ONNX files of both input conventions through their clients (``export_clients.py``):
   gluonface's ``FaceEmbedder`` and insightface's own recognition class (its session, its preprocessing):
   agreement with the MXNet symbol, held-out accuracy, and speed from uint8 crops (``--no-clients`` skips).
``--speed-archs`` adds speed-only rows for untrained networks of other architectures.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_export.py --out bench/results/export.md
"""
import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile
import time

import numpy as np

THREADS = int(os.environ.setdefault("OMP_NUM_THREADS", "2"))


def render_set(first_id, n_ids, per_id, seed):
    """Aligned synthetic faces: (n_ids*per_id, 112, 112, 3) uint8 RGB and labels 0..n_ids-1."""
    from gluonface.data.synthetic import SynthSpec, render_image
    spec = SynthSpec(identities=first_id + n_ids, images_per_id=per_id, seed=seed)
    images, labels = [], []
    for k in range(n_ids):
        for j in range(per_id):
            bgr, _ = render_image(spec, first_id + k, j)
            images.append(bgr[:, :, ::-1])
            labels.append(k)
    return np.stack(images), np.array(labels)


def train(arch, images, labels, steps, batch=32, lr=0.1, seed=0):
    """A short ArcFace training of ``arch``; returns the backbone (hybridized) and the final loss."""
    import mxnet as mx
    from mxnet import autograd, gluon
    from gluonface.losses import get_loss
    from gluonface.models import get_model
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    net = get_model(arch, embedding_size=128, head="FC")
    net.initialize(mx.init.Xavier(magnitude=2.0))
    loss_fn = get_loss("arcface", int(labels.max()) + 1, 128, s=32.0, m2=0.3)
    loss_fn.initialize()
    net.hybridize(static_alloc=True)
    loss_fn.hybridize(static_alloc=True)
    params = net.collect_params()
    params.update(loss_fn.collect_params())
    sched = mx.lr_scheduler.CosineScheduler(max_update=steps, base_lr=lr, final_lr=lr * 0.01)
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": lr, "momentum": 0.9, "wd": 5e-4,
                                            "lr_scheduler": sched})
    losses = []
    for step in range(steps):
        idx = rng.choice(len(images), batch, replace=False)
        x = images[idx].transpose(0, 3, 1, 2).astype(np.float32)
        flip = rng.random(batch) < 0.5
        x[flip] = x[flip][..., ::-1]
        with autograd.record():
            loss = loss_fn(net(mx.nd.array(x)), mx.nd.array(labels[idx])).mean()
        loss.backward()
        trainer.step(1)
        losses.append(float(loss.asscalar()))
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step:4d} loss {np.mean(losses[-50:]):.3f}", flush=True)
    return net, float(np.mean(losses[-20:]))


def face_statistics(net, images, batches=20, batch=16):
    """Training-mode forwards over faces: an untrained speed-only network gets BatchNorm statistics of real
    inputs (MXNet's defaults, mean 0 / var 1, make every layer's range wrong for INT8 calibration)."""
    import mxnet as mx
    from mxnet import autograd
    for i in range(batches):
        x = images[(i * batch) % len(images):][:batch].transpose(0, 3, 1, 2).astype(np.float32)
        with autograd.record(train_mode=True):
            net(mx.nd.array(x))


def make_pairs(labels, n_pairs, seed):
    """Half genuine, half impostor index pairs over held-out images, in shuffled order."""
    rng = np.random.default_rng(seed)
    pairs, same = [], []
    while len(pairs) < n_pairs:
        a, b = rng.choice(len(labels), 2, replace=False)
        want = len(pairs) % 2 == 0
        if (labels[a] == labels[b]) == want:
            pairs.append((a, b))
            same.append(want)
    order = rng.permutation(n_pairs)
    return [pairs[i] for i in order], [same[i] for i in order]


def forms(net, prefix):
    """name -> f(x float32 NCHW) -> numpy, for every form; ``prefix`` holds the exported files."""
    import mxnet as mx
    from gluonface.export.convention import metadata_props
    from gluonface.export.embedder import FaceEmbedder
    from gluonface.export.onnx import export_onnx
    from gluonface.export.symbol import embedding_symbol, export_symbol, load_symbol_block
    traced = embedding_symbol(net)
    width = net(mx.nd.zeros((1, 3, 112, 112))).shape[1]
    # The traced graph takes raw pixels; its metadata says so (its node names would tell insightface's rule,
    # and so FaceEmbedder, the opposite).
    traced_onnx = export_onnx(*traced, prefix + "-traced.onnx", metadata=metadata_props("raw", (112, 112), width))
    export_symbol(net, prefix + "-traced", fold=False)
    before = load_symbol_block(prefix + "-traced")  # FaceEmbedder before folding: SymbolBlock + nd.array
    before.hybridize(static_alloc=True, static_shape=True, backend="MKLDNN")
    out = {"training block": lambda x: net(mx.nd.array(x)).asnumpy(),
           "symbol, unfolded (before)": lambda x: before(mx.nd.array(x)).asnumpy(),
           "gluon": FaceEmbedder.from_net(net),
           "symbol": FaceEmbedder.from_path(prefix, backend="mxnet"),
           "FaceEmbedder auto": FaceEmbedder.from_path(prefix, backend="auto", threads=THREADS),
           "onnxruntime": FaceEmbedder.from_path(prefix + ".onnx", threads=THREADS),
           "onnxruntime, traced graph": FaceEmbedder.from_path(traced_onnx, threads=THREADS),
           "bare session": bare_session(prefix + ".onnx"),
           "bare session, traced graph": bare_session(traced_onnx)}
    if os.path.isfile(prefix + "-int8-symbol.json"):
        out["int8"] = FaceEmbedder.from_path(prefix + "-int8")
    return out


def bare_session(path):
    """onnxruntime as a user without gluonface runs it: one session, ``run`` on the float32 batch."""
    from gluonface.export.onnx import onnx_session
    sess = onnx_session(path, THREADS)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def auto_choices(fns):
    """What ``FaceEmbedder auto`` picked per batch class, for the table's notes."""
    emb = fns.get("FaceEmbedder auto")
    return emb.describe_backend() if emb is not None else ""


BASELINES = ("bare session", "bare session, traced graph")
LEGEND = ("Rows: *training block* = the Gluon network hybridized as trained (static_alloc, static_shape); "
          "*symbol, unfolded (before)* = the traced graph as `FaceEmbedder` ran it before folding (SymbolBlock "
          "with oneDNN fusion, a new `mx.nd.array` per call); "
          "*gluon* = `FaceEmbedder.from_net(net)` (the same network traced and folded in memory); *symbol* = "
          "`FaceEmbedder.from_path(prefix, backend='mxnet')` on the exported files; *FaceEmbedder auto* = "
          "`FaceEmbedder.from_path(prefix)`, the default: per batch class the faster of MXNet and onnxruntime, "
          "timed on its first calls; *onnxruntime* = `FaceEmbedder` on the exported (folded) ONNX, *traced "
          "graph* = on ONNX of the unfolded traced graph; *bare session* = an onnxruntime `InferenceSession` "
          "called directly on the float32 batch (no gluonface code), on either graph, at onnxruntime's defaults "
          "with the same intra-op thread count. Every ratio is against the faster bare session.")


def measure(fns, batch, rounds, seconds, clock=time.perf_counter):
    """Median images/s per form over ``rounds`` round-robin rounds of about ``seconds`` each.

    ``clock`` is wall time by default; ``time.process_time`` counts the CPU seconds of all this process's
    threads instead, which other processes' load does not inflate (use it with 1 thread per runtime)."""
    x = np.random.default_rng(0).uniform(0, 255, (batch, 3, 112, 112)).astype(np.float32)
    rates = {k: [] for k in fns}
    for f in fns.values():
        f(x)
        f(x)
    for _ in range(rounds):
        for name, f in fns.items():
            n, start = 0, clock()
            while n == 0 or clock() - start < seconds:
                f(x)
                n += 1
            rates[name].append(n * batch / (clock() - start))
    return {k: float(np.median(v)) for k, v in rates.items()}


def speed_table(title, fns, args, baselines=BASELINES, baseline_text="the faster ONNX Runtime row"):
    unit = "images per CPU-second" if args.clock == "cpu" else "images/s"
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    res, load = {}, []
    for b in (1, 64):
        res[b] = measure(fns, b, args.rounds, args.seconds, clock)
        load.append(os.getloadavg()[0])
    lines = [f"**{title}** ({unit}, median of {args.rounds} round-robin rounds; ratio vs {baseline_text}; "
             f"load average after batch 1 / 64: {load[0]:.1f} / {load[1]:.1f})", "",
             "| form | batch 1 | ratio | batch 64 | ratio |", "|---|---|---|---|---|"]
    for name in fns:
        cells = []
        for b in (1, 64):
            base = max(res[b][k] for k in baselines)
            cells += [f"{res[b][name]:.1f}", f"{res[b][name] / base:.2f}x"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "int8" in fns:
        lines += ["", "INT8 speedup vs float32 exported symbol: " + ", ".join(
            f"batch {b}: {res[b]['int8'] / res[b]['symbol']:.2f}x" for b in (1, 64))]
    if "FaceEmbedder auto" in fns:
        lines += ["", f"FaceEmbedder auto chose: {auto_choices(fns)}."]
    print("\n".join(lines), flush=True)
    return lines, res


def client_tables(net, work, held_x, pairs, same, args):
    """Agreement and speed of the ONNX files through FaceEmbedder and through insightface (export_clients)."""
    from export_clients import agreement, speed_forms
    import insightface
    lines, client_fns = agreement(net, work, THREADS, held_x, pairs, same)
    lines = [f"insightface {insightface.__version__}: `model_zoo.get_model(path, providers=['CPUExecutionProvider'], "
             f"sess_options=<intra-op threads {THREADS}>)`, then `get_feat(list of BGR uint8 crops)`; FaceEmbedder: "
             "`from_path(path).embed(RGB uint8 crops, flip=False)`.", "", *lines, ""]
    fns = speed_forms(client_fns, {"raw": os.path.join(work, "clients", "raw", "model.onnx")}, THREADS, held_x)
    base = next(iter(fns))
    table, _ = speed_table("Throughput of the ONNX clients from uint8 crops", fns, args, baselines=(base,),
                           baseline_text="the bare session")
    return lines + table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", help="use this `gluonface train` run instead of training here")
    p.add_argument("--arch", default="iresnet_tiny")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--ids", type=int, default=100, help="training identities")
    p.add_argument("--per-id", type=int, default=10)
    p.add_argument("--heldout-ids", type=int, default=40)
    p.add_argument("--pairs", type=int, default=800)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--speed-archs", default="mobilefacenet", help="comma list of extra speed-only archs")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: images/s; cpu: images per CPU-second of this process (robust to other load)")
    p.add_argument("--no-clients", action="store_true", help="skip the ONNX client (insightface) tables")
    p.add_argument("--engine", choices=["inference", "threaded"], default="inference",
                   help="inference: MXNet's NaiveEngine, what `gluonface eval/embed/export` run on the CPU "
                        "(gluonface.machine.use_inference_engine); threaded: MXNet's default engine")
    p.add_argument("--out", help="write the figures (markdown) here")
    args = p.parse_args(argv)
    if args.engine == "inference":   # before MXNet loads
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from gluonface.machine import use_inference_engine
        use_inference_engine("cpu")
    import cv2
    import mxnet as mx
    import onnxruntime as ort
    from export_clients import cpu_line
    from gluonface.data.pairs import save_bin
    from gluonface.data.record import RecordWriter
    from gluonface.export.run import export_model
    load0, started = os.getloadavg(), time.time()
    work = tempfile.mkdtemp(prefix="bench_export_")
    print(f"rendering synthetic identities into {work}", flush=True)
    train_x, train_y = render_set(0, args.ids, args.per_id, seed=11)
    held_x, held_y = render_set(args.ids, args.heldout_ids, 6, seed=11)
    w = RecordWriter(os.path.join(work, "train"))
    for img, lab in zip(train_x, train_y):
        w.add_image(cv2.imencode(".jpg", img[:, :, ::-1])[1].tobytes(), int(lab))
    w.close(image_size=(112, 112))
    pairs, same = make_pairs(held_y, args.pairs, seed=5)
    enc = [cv2.imencode(".png", held_x[i][:, :, ::-1])[1].tobytes() for ab in pairs for i in ab]
    save_bin(os.path.join(work, "heldout.bin"), enc, same)
    if args.run_dir:
        from gluonface.engine.checkpoint import load_backbone
        net, info = load_backbone(args.run_dir, "latest")
        net.hybridize(static_alloc=True, static_shape=True)
        source, final_loss = f"run directory {args.run_dir} (step {info.get('step')})", None
    else:
        print(f"training {args.arch} for {args.steps} steps", flush=True)
        t0 = time.time()
        net, final_loss = train(args.arch, train_x, train_y, args.steps)
        source = (f"{args.arch} (E=128) trained in this bench: {args.steps} steps of batch 32, ArcFace s=32 "
                  f"m=0.3, {args.ids} synthetic identities x {args.per_id} images, {time.time() - t0:.0f} s, "
                  f"final loss {final_loss:.2f}")
        info = {"model": {"name": args.arch}}
    net.hybridize(static_alloc=True, static_shape=True)
    prefix = os.path.join(work, "model")
    meta = export_model(net, prefix, info=info, onnx=True, int8=True, calib=os.path.join(work, "train"),
                        calib_images=256, pairs=os.path.join(work, "heldout.bin"))
    v = meta["verification"]
    lines = [f"## Export and inference (`bench/bench_export.py`)", "",
             f"Run {datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu_line()}, MXNet {mx.__version__} (MKLDNN), "
             f"onnxruntime {ort.__version__}, OMP_NUM_THREADS="
             f"{THREADS}, onnxruntime intra-op threads {THREADS}, MXNet engine "
             f"{os.environ.get('MXNET_ENGINE_TYPE', 'ThreadedEnginePerDevice')}. Load average at start {load0[0]:.1f} "
             "(absolute figures move with it; ratios come from interleaved rounds).", "",
             f"Command: `OMP_NUM_THREADS={THREADS} .venv/bin/python bench/bench_export.py "
             + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])) + "`", "",
             f"Model: {source}.", "",
             f"Held-out verification ({args.pairs} pairs of {args.heldout_ids} unseen identities, 10-fold, flip "
             "TTA):", "", "| form | accuracy % | AUC |", "|---|---|---|"]
    for k in ("symbol", "onnx", "int8"):
        lines.append(f"| {k} | {100 * v[k]['accuracy']:.2f} | {v[k]['auc']:.4f} |")
    c = meta["checks"]
    lines += ["", f"INT8 accuracy drop: **{v['int8_accuracy_drop_points']:.2f} points** (graph: "
              f"{meta['checks']['int8_graph']['quantised']}; calibration: "
              f"{c['int8_calibration']['images']} training images, {c['int8_calibration']['mode']}); min cosine "
              f"INT8 vs float32 on random inputs {c['int8_min_cosine_to_fp32']:.4f}. Parity: symbol vs Gluon "
              f"{c['symbol_max_abs_diff']:.1e}, ONNX Runtime vs MXNet {c['onnx_max_abs_diff']:.1e} "
              "(max abs diff, normalised embeddings).", "", LEGEND, ""]
    table, res = speed_table(f"Throughput, trained {meta['backbone']}", forms(net, prefix), args)
    lines += table
    if not args.no_clients:
        lines += ["", *client_tables(net, work, held_x, pairs, same, args)]
    for arch in [a for a in args.speed_archs.split(",") if a]:
        from gluonface.models import get_model
        other = get_model(arch, embedding_size=128)
        other.initialize(mx.init.Xavier())
        face_statistics(other, train_x)
        other.hybridize(static_alloc=True, static_shape=True)
        op = os.path.join(work, arch)
        from gluonface.errors import GluonFaceError
        int8_note = ""
        try:
            m = export_model(other, op, onnx=True, int8=True, calib=os.path.join(work, "train"), calib_images=64)
            int8_note = f"INT8 graph: {m['checks']['int8_graph']['quantised']}."
        except GluonFaceError as exc:   # an untrained network's INT8 may fail the float32 check: say so
            export_model(other, op, onnx=True)
            int8_note = f"INT8 refused by the float32 check ({str(exc)[:300]})."
        t, _ = speed_table(f"Throughput, {arch} (untrained weights, speed only)", forms(other, op), args)
        lines += ["", *t, "", int8_note]
    lines += ["", f"Load average at end {os.getloadavg()[0]:.1f}; total {time.time() - started:.0f} s. "
              f"Artefacts in {work} (export.json holds every check)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    json.dump(meta, open(os.path.join(work, "bench_meta.json"), "w"), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
