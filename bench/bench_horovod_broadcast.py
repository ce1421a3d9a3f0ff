"""What the start-up broadcast of the weights costs: Horovod's ``broadcast_`` per parameter (what gluonface did
before it found that op's use-after-free, see gluonface/parallel/horovod_ops.py) against gluonface's
``broadcast_from_rank0`` (one int32 allreduce per 64 MiB). Two ranks on this machine, a real backbone's
parameters, the two methods alternating over rounds in the same processes.

    python bench/bench_horovod_broadcast.py [--model iresnet50] [--rounds 7]      (starts horovodrun itself)
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


def _cpu():
    flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0]
    model = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")][0]
    keep = [f for f in flags.split() if f.startswith(("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx"))]
    return f"{model}, {os.cpu_count()} cores, {' '.join(keep)}"


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="iresnet50")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank:
        return rank_main(args)
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    out = subprocess.run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, __file__,
                          "--rank", "--model", args.model, "--rounds", str(args.rounds)],
                         capture_output=True, text=True, check=True).stdout
    res = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {_cpu()}, Python {platform.python_version()}; "
          f"{args.model}: {res['params']} parameters, {res['mb']:.1f} MB float32; 2 Horovod ranks (Gloo) on this "
          f"machine; {args.rounds} alternating rounds\n")
    print("| method | min s | median s |\n|---|---|---|")
    for label, ts in res["times"].items():
        print(f"| {label} | {min(ts):.3f} | {statistics.median(ts):.3f} |")
    hv, gf = (statistics.median(ts) for ts in res["times"].values())
    print(f"\ngluonface / Horovod time, median: {gf / hv:.2f}x")


if __name__ == "__main__":
    main()
