"""Training-step throughput with gluonface's native ops vs the pure-MXNet formulation vs PyTorch, interleaved.

Long-lived worker processes per model, one per arm (gluonface with every native op; with the native PReLU
only, BatchNorm by MXNet/oneDNN; with ``gluonface.ops.set_enabled(False)``; PyTorch in bench/.venv-torch),
each warmed up, then driven in rounds:
every round runs ``--steps`` steps in each arm, in a rotated order, so background load hits all arms alike.
Reported: median step time per arm over all rounds, and per-round paired ratios (median, min, max), with the
CPU, its flags, the load average and the native status. fp32, forward + ArcFace + backward + SGD/momentum.

    OMP_NUM_THREADS=2 python bench/bench_native.py [--models iresnet50 mobilefacenet] [--batch 32]
                                                   [--rounds 4] [--steps 2] [--out bench/results/native.md]
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PY = os.path.join(HERE, ".venv-torch", "bin", "python")
ARMS = ("native", "native_prelu", "mxnet", "torch", "native_heap", "mxnet_heap", "native_naive", "mxnet_naive")
ENABLED = {"native": True, "native_prelu": ("prelu",), "mxnet": False}
# MXNet 1.9.1's CPU storage manager is 'Naive': every array (and every reorder a custom op's blocked input
# gets) is a fresh malloc, i.e. mmap + page faults + munmap above glibc's 32 MB threshold. The *_heap arms
# run the same code with glibc keeping freed memory for reuse instead.
HEAP_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"


def gluon_serve(a):
    """Worker: build the step, warm it up, then answer 'run K' with K step times (seconds)."""
    import mxnet as mx
    from mxnet import autograd, gluon
    import gluonface.ops
    from gluonface.losses import get_loss
    from gluonface.models import get_model
    gluonface.ops.set_enabled(ENABLED[a.worker.replace("_heap", "").replace("_naive", "")])
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
    if os.environ.get("GLUONFACE_NATIVE_ISA") and gluonface.ops.native_active():   # --cap-avx2
        gluonface.ops.set_isa(os.environ["GLUONFACE_NATIVE_ISA"])
    status = gluonface.ops.status()
    print(json.dumps({"ready": True, "status": status}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        times, cpu, loss = [], [], None
        for _ in range(int(cmd[1])):
            t, c = time.perf_counter(), time.process_time()
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(a.batch)
            mx.nd.waitall()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        print(json.dumps({"times": times, "cpu": cpu, "loss": float(loss.mean().asscalar())}), flush=True)


class Worker:
    def __init__(self, arm, a, env):
        common = ["--model", a.model_now, "--batch", str(a.batch), "--size", str(a.size),
                  "--classes", str(a.classes)]
        if arm == "torch":
            cmd = [TORCH_PY, os.path.join(HERE, "torch_peer", "serve_torch.py")] + common
        else:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", arm] + common
        self.arm = arm
        if arm.endswith("_heap"):
            env = {**env, "GLIBC_TUNABLES": HEAP_TUNABLES}
        if arm.endswith("_naive"):   # MXNet's synchronous engine: no engine worker thread between the ops
            env = {**env, "MXNET_ENGINE_TYPE": "NaiveEngine"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.hello = self._answer()

    def _answer(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"{self.arm} worker died (exit {self.proc.wait()})")

    def run(self, steps):
        """(wall seconds per step, CPU seconds per step of the whole process)."""
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        answer = self._answer()
        return answer["times"], answer["cpu"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=120)


def cpu_line():
    model, flags = "unknown CPU", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile"]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(w for w in wanted if w in flags)}"


def measure(model, a, env):
    a.model_now = model
    workers = {arm: Worker(arm, a, env) for arm in a.arms}  # each warms up by building; one warm run next
    try:
        for w in workers.values():
            w.run(a.warmup)
        rounds = []
        for r in range(a.rounds):
            order = a.arms[r % len(a.arms):] + a.arms[:r % len(a.arms)]
            rounds.append({arm: workers[arm].run(a.steps) for arm in order})
            print(f"  round {r + 1}: " + ", ".join(f"{arm} {statistics.median(t[0]):.2f} s wall "
                                                    f"{statistics.median(t[1]):.2f} s CPU"
                                                    for arm, t in rounds[-1].items()), flush=True)
        status = workers["native"].hello.get("status") if "native" in workers else None
    finally:
        for w in workers.values():
            w.close()
    return rounds, status


def report(model, a, rounds, status, load):
    med = {arm: statistics.median(t for r in rounds for t in r[arm][0]) for arm in a.arms}
    cpu = {arm: statistics.median(t for r in rounds for t in r[arm][1]) for arm in a.arms}
    lines = [f"### {model}, fp32, batch {a.batch}, {a.size}×{a.size}, OMP_NUM_THREADS={a.threads}", "",
             f"{a.rounds} rounds × {a.steps} steps per arm after {a.warmup} warm-up steps; load average "
             f"{load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; native: "
             f"{status['backend'] if status else '-'} ({status['isa'] if status else '-'})", "",
             "| arm | median s/step (wall) | img/s | median CPU s/step (all threads) |", "|---|---|---|---|"]
    names = {"native": "gluonface, native BN+PReLU and PReLU", "native_prelu": "gluonface, native PReLU only",
             "mxnet": "gluonface, MXNet formulation", "torch": "PyTorch",
             "native_heap": "gluonface, native, glibc heap reuse", "mxnet_heap": "gluonface, MXNet, glibc heap reuse",
             "native_naive": "gluonface, native, NaiveEngine", "mxnet_naive": "gluonface, MXNet, NaiveEngine"}
    for arm in a.arms:
        lines.append(f"| {names[arm]} | {med[arm]:.3f} | {a.batch / med[arm]:.2f} | {cpu[arm]:.2f} |")
    lines += ["", "| ratio (speed = inverse time, per round) | wall median | wall min | wall max | CPU-time median |",
              "|---|---|---|---|---|"]
    for num, den in (("native", "torch"), ("native_prelu", "torch"), ("mxnet", "torch"), ("native", "mxnet"),
                     ("native", "native_prelu"), ("native_heap", "torch"), ("mxnet_heap", "torch"),
                     ("native_heap", "mxnet_heap"), ("native_heap", "native"), ("mxnet_heap", "mxnet"),
                     ("native_naive", "torch"), ("mxnet_naive", "torch"), ("native_naive", "native"),
                     ("mxnet_naive", "mxnet")):
        if num in med and den in med:
            per = sorted(statistics.median(r[den][0]) / statistics.median(r[num][0]) for r in rounds)
            per_cpu = sorted(statistics.median(r[den][1]) / statistics.median(r[num][1]) for r in rounds)
            lines.append(f"| {names[num]} / {names[den]} | {statistics.median(per):.2f}× | {per[0]:.2f}× | "
                         f"{per[-1]:.2f}× | {statistics.median(per_cpu):.2f}× |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="+", default=["mobilefacenet", "iresnet50"])
    ap.add_argument("--arms", nargs="+", default=list(ARMS[:4]), choices=ARMS)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cap-avx2", action="store_true",
                    help="every arm on its AVX2 code path (DNNL_MAX_CPU_ISA=AVX2 for MXNet's and PyTorch's oneDNN, "
                         "ATEN_CPU_CAPABILITY=avx2 for PyTorch's own kernels; the native kernels are pinned to "
                         "avx2): the instruction set of an AVX2-only CPU on this machine's cores")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "native.md"))
    a = ap.parse_args()
    if a.worker:
        return gluon_serve(a)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    if a.cap_avx2:
        env.update(DNNL_MAX_CPU_ISA="AVX2", ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2",
                   GLUONFACE_NATIVE_ISA="avx2")
    cmd = " ".join(["OMP_NUM_THREADS=%d" % a.threads, "python", "bench/bench_native.py"] + sys.argv[1:])
    out = ["# Native ops (issue 17): training step vs the MXNet formulation vs PyTorch", "",
           f"{datetime.datetime.now():%Y-%m-%d %H:%M} UTC, {cpu_line()}. Command: `{cmd}`.",
           "The machine was shared with other jobs: absolute times are noisy, the interleaved per-round "
           "ratios are the figures to read.", ""]
    for model in a.models:
        load = os.getloadavg()
        print(f"== {model}", flush=True)
        rounds, status = measure(model, a, env)
        out += report(model, a, rounds, status, load) + [""]
        print("\n".join(out[-12:]), flush=True)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
