"""What the start-up broadcast of the weights costs: Horovod's ``broadcast_`` per parameter (what gluonface did
before it found that op's use-after-free, see gluonface/parallel/horovod_ops.py) against gluonface's
``broadcast_from_rank0`` (one int32 allreduce per 64 MiB). Two ranks on this machine, a real backbone's
parameters, the two methods alternating over rounds in the same processes.

    python bench/bench_horovod_broadcast.py [--model iresnet50] [--rounds 7] [--runs 2]   (starts horovodrun;
    writes bench/results/horovod_broadcast.md)
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def rank_main(args):
    import mxnet as mx
    import horovod.mxnet as hvd
    from gluonface.models import get_model
    from gluonface.parallel.trainer import broadcast_from_rank0
    hvd.init()
    net = get_model(args.model)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 112, 112)))
    params = sorted(net.collect_params().values(), key=lambda p: p.name)

    def horovod_broadcast(tag):
        for p in params:
            tmp = p.list_data()[0].copy()
            hvd.broadcast_(tmp, root_rank=0, name=f"{tag}.{p.name}")
            p.set_data(tmp)
        mx.nd.waitall()

    def gluonface_broadcast(tag):
        broadcast_from_rank0(hvd, params, f"{tag}.")
        mx.nd.waitall()

    methods = (("Horovod broadcast_ per parameter", horovod_broadcast),
               ("gluonface broadcast_from_rank0", gluonface_broadcast))
    times = {label: [] for label, _ in methods}
    for r in range(args.rounds):
        for i, (label, fn) in enumerate(methods if r % 2 == 0 else methods[::-1]):   # order alternates
            t0 = time.perf_counter()
            fn(f"r{r}.{i}")
            times[label].append(time.perf_counter() - t0)
    if hvd.rank() == 0:
        mb = sum(p.data().size * 4 for p in params) / 1e6
        print("RESULT " + json.dumps({"times": times, "mb": mb, "params": len(params)}), flush=True)


INTRO = """### Start-up broadcast of the weights (`bench/bench_horovod_broadcast.py`)

gluonface no longer calls Horovod's broadcast: Horovod 0.28.1's `EnqueueTensorBroadcast` logs the op's name after
enqueueing it, and when the op completes in between (a preempted thread) that name has been freed. That crashed a
rank with SIGSEGV at start-up in CI (see `gluonface/parallel/horovod_ops.py`). Rank 0's bytes now go out as int32
allreduces of at most 64 MiB, summed with zeros, which is exact to the bit. What that costs, once per start (and per
elastic reset); an allreduce moves about twice a broadcast's bytes and reads every parameter into host memory once.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="iresnet50")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=2, help="separate two-rank jobs, one column each")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "horovod_broadcast.md"))
    ap.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank:
        return rank_main(args)
    from gluonface.machine import cpu_line
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    runs = []
    for _ in range(args.runs):
        out = subprocess.run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, __file__,
                              "--rank", "--model", args.model, "--rounds", str(args.rounds)],
                             capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))
    first = runs[0]
    lines = [INTRO, f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_line()}, Python "
             f"{platform.python_version()}; {args.model}: {first['params']} parameters, {first['mb']:.1f} MB float32; "
             f"2 Horovod ranks (Gloo) on this machine; {args.rounds} rounds, the two methods alternating in the same "
             f"processes; {args.runs} runs.", "",
             "| method | " + " | ".join(f"run {i + 1}: min / median s" for i in range(args.runs)) + " |",
             "|---|" + "---|" * args.runs]
    for label in first["times"]:
        cells = [f"{min(r['times'][label]):.3f} / {statistics.median(r['times'][label]):.3f}" for r in runs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratios = []
    for r in runs:
        hv, gf = (statistics.median(ts) for ts in r["times"].values())
        ratios.append(f"{gf / hv:.2f}x")
    lines.append("| gluonface / Horovod, medians | " + " | ".join(ratios) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
