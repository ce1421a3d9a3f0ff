"""Per-operator profile of one training step (forward + ArcFace + backward + SGD): gluonface vs PyTorch.

gluonface runs with MXNet's profiler (aggregate statistics, operator category) with every native op, with
the native PReLU only, and with none (``gluonface.ops.set_enabled``); PyTorch runs bench/torch_peer/profile_torch.py in bench/.venv-torch.
Each arm is its own process. MXNet's op bulking is switched off (MXNET_EXEC_BULK_EXEC_TRAIN=0) so every
operator is timed on its own; the step itself is timed the same way, so the profiled step is slightly slower
than a bench_step.py step.

    OMP_NUM_THREADS=2 python bench/profile_step.py --models iresnet50 mobilefacenet [--steps 2] [--top 16]

Prints, per model, a markdown table of ms per step by operator (largest first) for each arm.
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
    import gluonface.ops
    from gluonface.losses import get_loss
    from gluonface.models import get_model
    gluonface.ops.set_enabled({"on": True, "prelu": ("prelu",), "off": False}[a.native])
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

    def step():
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(a.batch)
        mx.nd.waitall()

    for _ in range(a.warmup):
        step()
    mx.profiler.set_config(profile_all=True, aggregate_stats=True,
                           filename=os.path.join("/tmp", f"gluonface-profile-{os.getpid()}.json"))
    mx.profiler.set_state("run")
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    wall = (time.perf_counter() - t) / a.steps
    mx.profiler.set_state("stop")
    stats = json.loads(mx.profiler.dumps(format="json"))["Time"].get("operator", {})
    ops = {name: s["Total"] / a.steps for name, s in stats.items()}
    print(json.dumps({"framework": f"gluonface native={a.native}", "model": a.model, "batch": a.batch,
                      "step_ms": wall * 1e3, "ops_ms": ops, "status": gluonface.ops.status()}))


def _run(cmd, env):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}


def table(run, top):
    """Markdown rows: operator, ms/step, % of the summed operator time."""
    if "error" in run:
        return [f"{run['framework'] if 'framework' in run else 'run'} failed: {run['error']}"]
    ops = sorted(run["ops_ms"].items(), key=lambda kv: -kv[1])
    total = sum(v for _, v in ops)
    rows = [f"**{run['framework']}**: step {run['step_ms']:.0f} ms wall, operators sum {total:.0f} ms", "",
            "| operator | ms/step | % |", "|---|---|---|"]
    for name, ms in ops[:top]:
        rows.append(f"| {name} | {ms:.1f} | {100 * ms / total:.1f} |")
    rest = sum(v for _, v in ops[top:])
    rows.append(f"| (other {max(len(ops) - top, 0)} operators) | {rest:.1f} | {100 * rest / max(total, 1e-9):.1f} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--native", default="on", choices=["on", "prelu", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="+", default=["iresnet50", "mobilefacenet"])
    ap.add_argument("--arms", nargs="+", default=["native", "native_prelu", "mxnet", "torch"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--top", type=int, default=16)
    ap.add_argument("--json", help="also write the raw runs here")
    a = ap.parse_args()
    if a.worker:
        return gluon_worker(a)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    genv = {**env, "MXNET_EXEC_BULK_EXEC_TRAIN": "0"}
    common = ["--batch", str(a.batch), "--size", str(a.size), "--steps", str(a.steps),
              "--warmup", str(a.warmup), "--classes", str(a.classes)]
    runs = []
    for model in a.models:
        print(f"\n### {model}, batch {a.batch}, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, "
              f"load average {os.getloadavg()[0]:.1f}\n", flush=True)
        for arm in a.arms:
            if arm == "torch":
                run = _run([TORCH_PY, os.path.join(HERE, "torch_peer", "profile_torch.py"), "--model", model]
                           + common, env)
                run.setdefault("framework", "torch")
            else:
                run = _run([sys.executable, os.path.abspath(__file__), "--worker", "--model", model,
                            "--native", {"native": "on", "native_prelu": "prelu"}.get(arm, "off")] + common,
                           genv)
                run.setdefault("framework", f"gluonface {arm}")
            runs.append(run)
            print("\n".join(table(run, a.top)) + "\n", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
