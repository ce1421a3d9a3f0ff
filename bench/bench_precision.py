"""bf16 against float32, with float64 as the judge: per-operator kernels and whole training gradients.

    .venv/bin/python bench/bench_precision.py [--backbones iresnet18 mobilefacenet ...] [--losses arcface ...]
        [--batch 8] [--size 112] [--out bench/results/precision.md]

Why gluonface refuses bf16 training (``gluonface.precision.BF16_TRAINING_REFUSED``) and keeps bf16
inference. Every (backbone, loss) runs three child processes on identical parameters, images and labels:
float64 (no AMP; the judge), float32, and bf16 (``amp.init('bfloat16')``, as ``train.amp=bf16`` would).
A parameter is *well determined* when its float32 gradient agrees with float64's (cosine >= 0.9999): the
others (e.g. the shift of a BatchNorm followed by another training-mode BatchNorm, whose true gradient is 0)
are float32 rounding noise too and cannot judge bf16. The bar a precision must meet to train: every well-
determined parameter's bf16 gradient within cosine 0.99 of float64's. The per-operator table shows the
kernels themselves are accurate; the loss of accuracy comes from composing them.
"""
import argparse
import datetime
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BAR = 0.99
WELL_DETERMINED = 0.9999


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def child(mode, name, loss_name, batch, size, out):
    """One forward + backward of ``name`` with ``loss_name`` in ``mode`` (f64 | f32 | bf16); saves gradients."""
    import mxnet as mx
    if mode == "bf16":
        from gluonface.precision import init_amp
        init_amp("bf16")
    from gluonface.losses import get_loss
    from gluonface.models import get_model
    classes, emb = 20, 128
    net = get_model(name, embedding_size=emb, input_size=size)
    net.initialize(mx.init.Xavier(magnitude=2))
    net(mx.nd.zeros((2, 3, size, size)))
    rng = np.random.default_rng(1)
    for key, p in sorted(net.collect_params().items()):   # the same non-trivial values in every mode
        shape = p.shape
        v = (rng.uniform(0.5, 2.0, shape) if key.endswith("running_var") else
             rng.uniform(0.5, 1.5, shape) if key.endswith("gamma") else
             rng.uniform(0.05, 0.4, shape) if key.endswith("alpha") else
             rng.normal(0, 0.1, shape) if key.endswith(("running_mean", "beta", "bias")) else p.data().asnumpy())
        p.set_data(mx.nd.array(v))
    dtype = "float64" if mode == "f64" else "float32"
    if mode == "f64":
        net.cast("float64")
    x = mx.nd.array(np.random.default_rng(2).uniform(0, 255, (batch, 3, size, size)), dtype=dtype)
    y = mx.nd.array(np.arange(batch) % (batch // 2) if loss_name == "triplet"
                    else np.random.default_rng(3).integers(0, classes, batch))
    if loss_name == "partial_fc":
        from types import SimpleNamespace
        from gluonface.losses.partial_fc import build_partial_fc
        cfg = SimpleNamespace(sub_centers=1, s=64.0, m1=1.0, m2=0.5, m3=0.0, easy_margin=False, sample_rate=0.5)
        loss = build_partial_fc(cfg, classes, emb, SimpleNamespace(engine="local", ctx=[mx.cpu()]), seed=0)
    else:
        loss = get_loss(loss_name, classes, emb, **({"compute_dtype": "float64"} if mode == "f64" else {}))
        loss.initialize()
        loss(mx.nd.zeros((2, emb), dtype=dtype), mx.nd.array([0, 1]))
        for _, p in sorted(loss.collect_params().items()):
            p.set_data(mx.nd.array(np.random.default_rng(4).normal(0, 0.1, p.shape), dtype=dtype))
    net.hybridize()
    with mx.autograd.record():
        e = net(x)
        e = e.astype("float32") if mode == "bf16" else e
        total = loss(e, y).mean()
    total.backward()
    grads = {k: p.grad().asnumpy().astype(np.float64) for k, p in net.collect_params().items()
             if p.grad_req != "null"}
    np.savez(out, __embedding__=e.asnumpy().astype(np.float64), **grads)


def compare(paths):
    """Row of the gradient table from the three saved runs."""
    d, f, b = (np.load(p) for p in paths)
    keys = [k for k in d.files if k != "__embedding__"]
    c32 = np.array([_cos(d[k], f[k]) for k in keys])
    c16 = np.array([_cos(d[k], b[k]) for k in keys])
    well = c32 >= WELL_DETERMINED
    worst = keys[int(np.argmin(np.where(well, c16, np.inf)))]
    return {"embedding": _cos(d["__embedding__"], b["__embedding__"]), "params": len(keys),
            "well": int(well.sum()), "min": float(c16[well].min()), "median": float(np.median(c16[well])),
            "below": int((c16[well] < BAR).sum()), "worst": worst}


def operator_rows():
    """bf16 and float32 against float64 for single operators at MobileFaceNet / iresnet shapes."""
    import mxnet as mx
    from mxnet.contrib.amp.amp import bfloat16
    rng = np.random.default_rng(0)
    n = 8

    def conv(k, s, groups):
        return lambda x, w: mx.nd.Convolution(x, w, kernel=(k, k), stride=(s, s), pad=(k // 2, k // 2),
                                              num_filter=w.shape[0], num_group=groups, no_bias=True)

    def bn(x, g, b):
        return mx.nd.BatchNorm(x, g, b, mx.nd.zeros(g.shape, dtype=g.dtype), mx.nd.ones(g.shape, dtype=g.dtype),
                               fix_gamma=False, eps=2e-5)
    cases = [("conv 3x3, 3->64, stride 2", conv(3, 2, 1), [(n, 3, 112, 112), (64, 3, 3, 3)], 2),
             ("depthwise 3x3, 64 ch, 56x56", conv(3, 1, 64), [(n, 64, 56, 56), (64, 1, 3, 3)], 2),
             ("pointwise 1x1, 128->128, 28x28", conv(1, 1, 1), [(n, 128, 28, 28), (128, 128, 1, 1)], 2),
             ("global depthwise 7x7, 512 ch", conv(7, 1, 512), [(n, 512, 7, 7), (512, 1, 7, 7)], 2),
             ("BatchNorm (train), 128 ch, 28x28", bn, [(n, 128, 28, 28), (128,), (128,)], 1),
             ("minimum(x, 0) (PReLU part)", lambda x: mx.nd.minimum(x, 0.0), [(n, 128, 28, 28)], 1),
             ("residual add", lambda x, y: x + y, [(n, 128, 28, 28), (n, 128, 28, 28)], 2),
             ("dense 512x7x7 -> 512", lambda x, w: mx.nd.FullyConnected(x, w, num_hidden=512, no_bias=True),
              [(n, 512, 7, 7), (512, 512 * 49)], 2)]
    rows = []
    for label, fn, shapes, low_inputs in cases:
        leaves = [rng.normal(size=s) for s in shapes]
        proj, res = None, {}
        for mode in ("f64", "f32", "bf16"):
            dt = "float64" if mode == "f64" else "float32"
            ins = [mx.nd.array(v, dtype=dt) for v in leaves]
            for a in ins:
                a.attach_grad()
            with mx.autograd.record():
                used = [mx.nd.amp_cast(a, dtype=bfloat16) if mode == "bf16" and i < low_inputs else a
                        for i, a in enumerate(ins)]
                out = fn(*used)
                out = mx.nd.amp_cast(out, dtype="float32") if mode == "bf16" else out
                proj = rng.normal(size=out.shape) if proj is None else proj
                (out * mx.nd.array(proj, dtype=out.dtype)).sum().backward()
            res[mode] = (out.asnumpy(), [a.grad.asnumpy() for a in ins])
        ref_out, ref_grads = res["f64"]
        rows.append((label, *[(_cos(res[m][0], ref_out), min(_cos(g, r) for g, r in zip(res[m][1], ref_grads)))
                              for m in ("f32", "bf16")]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="*", default=["iresnet18", "mobilefacenet", "iresnet_tiny",
                                                        "gluoncv:resnet18_v1b", "gluoncv:mobilenetv2_1.0"])
    ap.add_argument("--losses", nargs="*", default=["arcface", "cosface", "combined", "sphereface", "softmax",
                                                     "subcenter_arcface", "triplet", "partial_fc"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "precision.md"))
    ap.add_argument("--child", nargs=6, metavar=("MODE", "BACKBONE", "LOSS", "BATCH", "SIZE", "OUT"))
    args = ap.parse_args(argv)
    if args.child:
        mode, name, loss, batch, size, out = args.child
        return child(mode, name, loss, int(batch), int(size), out)
    from gluonface.machine import cpu_line
    from gluonface.precision import kernel_check
    ok, detail = kernel_check("bf16")
    command = "python bench/bench_precision.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["## Precision: bf16 against float32, float64 as the judge", "",
             f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu_line()}, load average {os.getloadavg()[0]:.1f} at "
             f"start. Command: `{command.strip()}`", "", f"Kernel probe: {detail}", ""]
    if not ok:
        lines.append("bf16 kernels are not usable on this CPU: nothing more to measure.")
    else:
        lines += ["### Single operators (forward output and worst input gradient, cosine to float64)", "",
                  "| operator | float32 output | float32 gradient | bf16 output | bf16 gradient |",
                  "|---|---|---|---|---|"]
        for label, (fo, fg), (bo, bg) in operator_rows():
            lines.append(f"| {label} | {fo:.6f} | {fg:.6f} | {bo:.6f} | {bg:.6f} |")
        lines += ["", f"### Whole training step, batch {args.batch}, {args.size}x{args.size} "
                  f"(parameter gradients; bar: every well-determined one >= {BAR})", "",
                  "| backbone | loss | embedding cos | params (well determined) | bf16 grad cos min | median | "
                  f"below {BAR} | worst |", "|---|---|---|---|---|---|---|---|"]
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.backbones:
                for loss in args.losses:
                    paths = [os.path.join(tmp, f"{m}.npz") for m in ("f64", "f32", "bf16")]
                    for mode, path in zip(("f64", "f32", "bf16"), paths):
                        subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, name, loss,
                                        str(args.batch), str(args.size), path], check=True,
                                       env=dict(os.environ, OMP_NUM_THREADS="2"), stderr=subprocess.DEVNULL)
                    r = compare(paths)
                    lines.append(f"| {name} | {loss} | {r['embedding']:.5f} | {r['params']} ({r['well']}) | "
                                 f"{r['min']:.4f} | {r['median']:.4f} | {r['below']} | {r['worst']} |")
                    print(lines[-1], flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
