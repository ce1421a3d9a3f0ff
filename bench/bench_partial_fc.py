"""Partial FC benchmark: classifier memory per worker and step time, both engines, vs the dense softmax.

    .venv/bin/python bench/bench_partial_fc.py [--classes 100000,1000000] [--emb 128] [--batch 64]
        [--rates 1.0,0.1] [--steps 3] [--out bench/results/partial_fc.md]

Each configuration runs in fresh processes (W=2 through `gluonface launch`, real Horovod ranks or a real
scheduler/server/worker job) on random embeddings and labels, classifier only (no backbone):
forward + backward + optimizer step, averaged over ``--steps`` after one warm-up step (max over ranks).
Memory = resident set size growth of a worker after building the classifier (MXNet's pool is disabled
so that RSS follows live arrays): ``steady`` = largest RSS seen between steps, ``peak`` = ru_maxrss
(includes rank 0's one-off initialisation of the servers, one 256 MB row block at a time since commit
e316e93 and the whole matrix before it, and Horovod's fusion buffer,
64 MB by default, at W > 1). The baseline, measured in the
same run, is the dense margin softmax (``get_loss('arcface')``) of one process on the same global batch.
Figures for C = 10^7, 10^8 and W = 8, 64 are computed from the model printed with the table.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import types

from gluonface.machine import cpu_line

os.environ.setdefault("MXNET_CPU_MEM_POOL_TYPE", "Unpooled")
# keep glibc from raising its mmap threshold after big frees (RSS would then keep freed arrays)
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
os.environ.setdefault("OMP_NUM_THREADS", "2")

MB = 1024.0 * 1024.0


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def run_one(args):
    """Inside a worker: build the classifier of ``args.run``, time steps, write JSON for this rank."""
    import mxnet as mx
    import numpy as np
    from mxnet import autograd, gluon, nd
    from gluonface.parallel import init_dist

    engine = {"dense": "local", "hvd": "horovod" if "HOROVOD_RANK" in os.environ else "local", "ps": "kvstore"}
    kvstore = "dist_sync" if args.run == "ps" else "device"
    dist_ctx = init_dist(types.SimpleNamespace(engine=engine[args.run], kvstore=kvstore))
    rng = np.random.default_rng(dist_ctx.rank)
    batch = args.batch * (args.dense_workers if args.run == "dense" else 1)   # dense: the global batch
    data = [(nd.array(rng.normal(size=(batch, args.emb))), nd.array(rng.integers(0, args.classes, batch)))
            for _ in range(args.steps + 1)]
    for x, _ in data:
        x.attach_grad()
    nd.waitall()
    base = _rss_mb()
    opt = {"learning_rate": 0.1, "momentum": 0.9, "wd": 5e-4}
    if args.run == "dense":
        from gluonface.losses import get_loss
        cls = get_loss("arcface", args.classes, args.emb)
        cls.initialize(mx.init.Normal(0.01))
        cls.hybridize()
        trainer = gluon.Trainer(cls.collect_params(), "sgd", opt, kvstore=None)
    else:
        from gluonface.losses.partial_fc import build_partial_fc
        loss_cfg = types.SimpleNamespace(s=64.0, m1=1.0, m2=0.5, m3=0.0, easy_margin=False, sub_centers=1,
                                         sample_rate=args.rate)
        cls = build_partial_fc(loss_cfg, args.classes, args.emb, dist_ctx)
        trainer = (cls.make_trainer("sgd", opt, batch_size=batch) if args.run == "ps"
                   else cls.make_trainer("sgd", opt))
    times, steady = [], 0.0
    for i, (x, y) in enumerate(data):
        t0 = time.perf_counter()
        with autograd.record():
            loss = cls(x, y)
        loss.backward()
        trainer.step(batch)
        nd.waitall()
        if i:
            times.append(time.perf_counter() - t0)
        steady = max(steady, _rss_mb() - base)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base
    rows = int(getattr(cls, "last_rows", np.arange(args.classes)).size)
    with open(f"{args.json}.rank{dist_ctx.rank}", "w") as f:
        json.dump({"step_s": float(np.mean(times)), "steady_mb": steady, "peak_mb": peak, "rows": rows,
                   "rank": dist_ctx.rank, "loss": float(loss.mean().asscalar())}, f)


def launch_one(run, classes, rate, workers, args, tmp):
    """Run one configuration in fresh processes; returns the per-rank results."""
    from gluonface.launch.job import LaunchRequest, launch
    name = f"{run}-C{classes}-r{rate}-W{workers}"
    out = os.path.join(tmp, name)
    cmd = (sys.executable, os.path.abspath(__file__), "--run", run, "--json", out, "--classes", str(classes),
           "--rate", str(rate), "--emb", str(args.emb), "--batch", str(args.batch), "--steps", str(args.steps),
           "--dense-workers", str(workers if run == "dense" else 1))
    if run == "hvd" and workers > 1:
        rc = launch(LaunchRequest(config="-", engine="horovod", workers=workers, command=cmd,
                                  log_dir=out + "-logs", timeout=1800), echo=None)
    elif run == "ps":
        rc = launch(LaunchRequest(config="-", engine="kvstore", workers=workers, servers=1, command=cmd,
                                  log_dir=out + "-logs", timeout=1800), echo=None)
    else:
        rc = subprocess.call(cmd)
    if rc != 0:
        raise SystemExit(f"{name} failed (rc={rc}); logs under {out}-logs")
    ranks = [json.load(open(f"{out}.rank{r}")) for r in range(workers if run != "dense" else 1)]
    return {"run": run, "C": classes, "rate": rate, "W": workers,
            "step_s": max(r["step_s"] for r in ranks), "steady_mb": max(r["steady_mb"] for r in ranks),
            "peak_mb": max(r["peak_mb"] for r in ranks), "rows": ranks[-1]["rows"]}


def model_mb(run, C, W, rate, E, b):
    """Classifier bytes per worker (MB), fp32: state arrays + the step's largest activations.

    dense: weight, grad, momentum (3·C·E) + ~6 (N, C) arrays of its op-by-op graph, N = b·W.
    hvd:   weight, grad, momentum of the shard (3·ceil(C/W)·E), the sampled rows and their normalised
           copy (2·K·E, K = ceil(rate·C/W)), cos and probabilities (2·N·K), gathered features (2·N·E).
    ps:    pulled rows as received, dense copy, normalised copy, gradient (4·K·E, K = ceil(rate·C)) and
           2·b·K; the servers hold 2·C·E (centres + momentum) split over S servers.
    """
    N = b * W
    if run == "dense":
        return (3 * C * E + 6 * N * C) * 4 / MB
    if run == "hvd":
        K = -(-int(rate * C) // W)
        return (3 * (-(-C // W)) * E + 2 * K * E + 2 * N * K + 2 * N * E) * 4 / MB
    K = int(rate * C)
    return (4 * K * E + 2 * b * K) * 4 / MB


def model_flops(run, C, W, rate, E, b):
    """Multiply-adds of the step's three GEMMs on one worker (logits, feature grad, centre grad)."""
    N = b * W
    K = C if run == "dense" else (-(-int(rate * C) // W) if run == "hvd" else int(rate * C))
    rows = N if run in ("dense", "hvd") else b
    return 3.0 * rows * K * E


def report(results, args, command):
    """Markdown: measured table with ratios to the dense baseline, then the computed model."""
    E, b = args.emb, args.batch
    dense = {(r["C"], r["W"]): r for r in results if r["run"] == "dense"}
    lines = ["# Partial FC: classifier memory per worker and step time", "",
             f"Machine: {platform.node()}, {cpu_line()}, {platform.platform()}; "
             f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at start "
             f"{args.load:.1f} on 2 cores (other helpers were running: absolute times are noisy, ratios less so).",
             f"Command: `{command}`", "",
             f"E = {E}, per-worker batch b = {b}, fp32, CPU, ArcFace margin, SGD momentum 0.9. Classifier "
             "only (random embeddings). `steady`/`peak` = RSS growth of the worst worker (MB); ratios are "
             "against the dense softmax of one process on the same global batch (same run).", "",
             "| engine | C | sample rate | W | rows/step | step s | steady MB | peak MB | time / dense | "
             "memory / dense | model MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = dense.get((r["C"], r["W"]))
        ratio_t = f"{r['step_s'] / base['step_s']:.2f}" if base else "-"
        ratio_m = f"{r['steady_mb'] / max(base['steady_mb'], 1e-9):.2f}" if base else "-"
        lines.append(f"| {r['run']} | {r['C']:.0e} | {r['rate']} | {r['W']} | {r['rows']} | {r['step_s']:.3f} | "
                     f"{r['steady_mb']:.0f} | {r['peak_mb']:.0f} | {ratio_t} | {ratio_m} | "
                     f"{model_mb(r['run'], r['C'], r['W'], r['rate'], E, b):.0f} |")
    biggest = max(r["C"] for r in results)      # GEMM-bound there; small C is dominated by overheads
    rate_flops = [model_flops(r["run"], r["C"], r["W"], r["rate"], E, b) / r["step_s"] for r in results
                  if r["C"] == biggest and r["run"] != "ps"]
    speed = sorted(rate_flops)[len(rate_flops) // 2]
    sizes = (10 ** 5, 10 ** 6, 10 ** 7, 10 ** 8)
    rows = [(run, rate, W) for W in (1, 2, 8, 64) for run, rate in
            (("dense", 1.0), ("hvd", 1.0), ("hvd", 0.1), ("ps", 0.1))]
    for title, value in (("classifier GB per worker", lambda run, C, W, rate: model_mb(run, C, W, rate, 512, 128)
                          / 1024),
                         ("step s on this CPU", lambda run, C, W, rate: model_flops(run, C, W, rate, 512, 128)
                          / speed)):
        lines += ["", f"## Computed: {title} (E = 512, b = 128 per worker, fp32, model of `model_mb`; step time "
                  f"= GEMM multiply-adds / {speed / 1e9:.2f} G/s, the median dense/Horovod rate measured above "
                  "at the largest C, so only ratios carry over; PS transfer time not modelled; dense = one "
                  "process on the global batch b·W)", "",
                  "| engine | sample rate | W | " + " | ".join(f"C = {C:.0e}" for C in sizes) + " |",
                  "|---|---|---|" + "---|" * len(sizes)]
        for run, rate, W in rows:
            lines.append(f"| {run} | {rate} | {W} | "
                         + " | ".join(f"{value(run, C, W, rate):.3g}" for C in sizes) + " |")
    lines += ["", "Reading. Horovod Partial FC keeps ceil(C/W) centres with their gradient and momentum per "
              "worker and computes (N, C/W) logits for the global batch N = b·W: the state falls as 1/W, the "
              "logit work per worker stays b·C (weak scaling), and sampling multiplies both logits and GEMMs "
              "by rate. On parameter servers the workers hold only the rate·C rows they pull, but every worker "
              "pulls and pushes them each step, so worker memory and traffic do not fall with W: it suits "
              "rate·C·E that fits a worker and a network (10^7 ids at rate 0.01), not 10^8 ids at rate 0.1, "
              "where the Horovod variant is the one to use. The servers hold centres and momentum, 2·C·E·4 "
              "bytes split over S servers (410 GB at C = 10^8, E = 512).", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", choices=("dense", "hvd", "ps"), help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--dense-workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--classes", default="100000,1000000")
    ap.add_argument("--rates", default="1.0,0.1")
    ap.add_argument("--rate", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--emb", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--replot", help="rebuild the report from a previous run's printed results (log file)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "partial_fc.md"))
    args = ap.parse_args()
    if args.run:
        args.classes = int(float(args.classes))
        return run_one(args)
    import ast
    import tempfile
    args.load = os.getloadavg()[0]
    command = "python bench/bench_partial_fc.py " + " ".join(sys.argv[1:])
    results = []
    if args.replot:       # the measurements, load and command of the run that printed this log
        import re
        with open(args.replot) as f:
            log = f.read().splitlines()
        results = [ast.literal_eval(line) for line in log if line.startswith("{'run'")]
        args.load = float(next(re.search(r"load average at start ([0-9.]+)", line).group(1)
                               for line in log if "load average at start" in line))
        command = next(line for line in log if line.startswith("Command:"))[len("Command: `"):-1]
    with tempfile.TemporaryDirectory() as tmp:
        for C in ([] if args.replot else (int(float(c)) for c in args.classes.split(","))):
            for W in (int(w) for w in args.workers.split(",")):
                results.append(launch_one("dense", C, 1.0, W, args, tmp))
                print(results[-1], flush=True)
                for rate in (float(r) for r in args.rates.split(",")):
                    for run in ("hvd", "ps"):
                        results.append(launch_one(run, C, rate, W, args, tmp))
                        print(results[-1], flush=True)
    text = report(results, args, command)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
