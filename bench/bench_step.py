"""Training-step throughput (forward + ArcFace + backward + SGD) of gluonface vs a PyTorch peer, same CPU.

Each measurement runs in its own process (AMP patches MXNet process-wide). The PyTorch side runs in
bench/.venv-torch (``python -m venv bench/.venv-torch && bench/.venv-torch/bin/pip install torch==2.13.0
numpy``). Runs alternate gluonface / PyTorch per configuration so that background load hits both alike.

    python bench/bench_step.py [--models iresnet50 mobilefacenet] [--dtypes fp32 bf16] [--batch 32]
                               [--steps 5] [--repeats 2] [--no-peer] [--env KEY=VALUE ...]

Prints one line per run and a table of images/s with the gluonface / PyTorch ratio.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PY = os.path.join(HERE, ".venv-torch", "bin", "python")


def gluon_worker(a):
    import mxnet as mx
    from mxnet import autograd, gluon
    if a.dtype == "bf16":
        from gluonface.precision import init_amp
        init_amp("bf16")  # raises GluonFaceError when this CPU has no bf16 kernels
    from gluonface.losses import get_loss
    from gluonface.models import get_model
    mx.random.seed(0)
    net = get_model(a.model)
    loss_fn = get_loss("arcface", a.classes, 512)
    net.initialize(mx.init.Xavier(magnitude=2))
    loss_fn.initialize()
    net.hybridize(static_alloc=True, static_shape=True)
    loss_fn.hybridize(static_alloc=True, static_shape=True)
    params = net.collect_params()
    params.update(loss_fn.collect_params())
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": 0.01, "momentum": 0.9, "wd": 5e-4})
    x = mx.nd.random.uniform(0, 255, shape=(a.batch, 3, a.size, a.size))
    y = mx.nd.array(mx.nd.random.randint(0, a.classes, shape=(a.batch,)).asnumpy())
    times = []
    for _ in range(a.warmup + a.steps):
        t = time.perf_counter()
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(a.batch)
        mx.nd.waitall()
        times.append(time.perf_counter() - t)
    steady = sorted(times[a.warmup:])
    med = steady[len(steady) // 2]
    print(json.dumps({"framework": "gluonface", "model": a.model, "dtype": a.dtype, "batch": a.batch,
                      "median_s": med, "img_s": a.batch / med,
                      "loss": float(loss.mean().asscalar())}))


def _run(cmd, env):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return {"error": tail[:160]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=["gluon"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="+", default=["iresnet50", "mobilefacenet"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true", help="gluonface only (e.g. for iresnet_tiny)")
    ap.add_argument("--env", nargs="*", default=[], help="extra KEY=VALUE for the gluonface runs (oneDNN knobs)")
    a = ap.parse_args()
    if a.worker:
        return gluon_worker(a)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    genv = {**env, **dict(kv.split("=", 1) for kv in a.env)}
    common = ["--batch", str(a.batch), "--size", str(a.size), "--steps", str(a.steps),
              "--warmup", str(a.warmup), "--classes", str(a.classes)]
    rows = []
    for model in a.models:
        for dtype in a.dtypes:
            g_runs, t_runs = [], []
            for _ in range(a.repeats):
                g = _run([sys.executable, os.path.abspath(__file__), "--worker", "gluon", "--model", model,
                          "--dtype", dtype] + common, genv)
                t = {"error": "no peer run"} if a.no_peer else _run(
                    [TORCH_PY, os.path.join(HERE, "torch_peer", "bench_torch.py"), "--model", model,
                     "--dtype", dtype] + common, env)
                print("gluonface", model, dtype, g, flush=True)
                print("torch    ", model, dtype, t, flush=True)
                g_runs.append(g)
                t_runs.append(t)
            best = lambda runs: max((r["img_s"] for r in runs if "img_s" in r), default=None)  # noqa: E731
            rows.append((model, dtype, best(g_runs), best(t_runs),
                         next((r["error"] for r in g_runs if "error" in r), "")))
    print(f"\n{'model':<14}{'dtype':<6}{'gluonface img/s':>16}{'torch img/s':>13}{'ratio':>8}  note")
    for model, dtype, g, t, err in rows:
        ratio = f"{g / t:.2f}" if g and t else "n/a"
        fmt = lambda v: f"{v:.2f}" if v else "n/a"  # noqa: E731
        print(f"{model:<14}{dtype:<6}{fmt(g):>16}{fmt(t):>13}{ratio:>8}  {err}")


if __name__ == "__main__":
    sys.exit(main())
