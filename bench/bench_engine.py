"""Engine overhead: images/s of `gluonface train` vs the bare training step, same model and batch, same run.

    .venv/bin/python bench/bench_engine.py [--config configs/tiny_synthetic.yaml] [--steps 80] [--repeats 3]
        [--blocks 24] [--block-steps 20] [--out bench/results/engine.md]

Two measurements:

1. Interleaved, one process (the robust one on a shared machine): the parts are built once, then blocks of
   ``--block-steps`` steps rotate (one block per arm per round) between the bare step and the engine's ``TrainLoop`` with the hooks
   `gluonface train` installs (progress bar, log lines, metrics.jsonl, TensorBoard; verification and
   checkpoints off) over the real loader, with the decode cache on (the default) and off. Each block ends
   with ``mx.nd.waitall()``; medians over ``--blocks`` blocks of each arm. Load changes hit every arm alike.
   The same blocks also count CPU time from /proc (main thread, whole process, loader workers): the loop's
   own CPU per step is the main thread's excess over the bare step plus the workers', a figure that other
   jobs on the machine do not inflate.
2. End to end, separate processes (as before):

Baseline ("bare"): the parts `gluonface train` builds (``engine.build.build_everything``: same backbone,
loss block, hybridization and trainers), stepped on one batch already in memory: forward, backward,
``trainer.step`` for backbone and classifier, nothing else.
Engine: ``engine.train.train`` on a synthetic rec written here (real loader with decode workers and
augmentation, progress bar, log lines, metrics.jsonl, TensorBoard), with verification and checkpoints
turned off except the final checkpoint; images/s from the first to the last logged step of metrics.jsonl
(start-up, the first window and the final checkpoint excluded). Each measurement runs in its own process;
bare and engine runs alternate ``--repeats`` times and the medians are compared.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from gluonface.machine import cpu_line

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def make_rec(prefix, ids, per_id):
    import cv2

    from gluonface.data.record import RecordWriter
    from gluonface.data.synthetic import SynthSpec, render_image
    spec = SynthSpec(identities=ids, images_per_id=per_id)
    w = RecordWriter(prefix)
    for i in range(ids):
        for j in range(per_id):
            img, _ = render_image(spec, i, j)
            w.add_image(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(), i)
    w.close(image_size=(112, 112))


def overrides(args, rec, run_dir):
    return [f"data.rec={rec}", "eval.bins=[]", "train.checkpoint_every=0", "train.checkpoint_at_epoch_end=false",
            f"train.max_steps={args.steps}", "train.log_every=10", f"train.run_dir={run_dir}", "train.epochs=100"]


def phase_interleaved(args, rec):
    """Median images/s of the bare step, the loop with the decode cache, and without (see the docstring)."""
    import mxnet as mx
    import numpy as np
    from mxnet import autograd

    from gluonface.config import load_config
    from gluonface.parallel import init_dist
    from gluonface.engine.build import build_everything, build_loader
    from gluonface.engine.hooks import LogHook, VerifyHook
    from gluonface.engine.loop import TrainLoop
    from gluonface.engine.runlog import RunLogger
    run_dir = os.path.join(args.tmp, "interleaved")
    cfg = load_config(args.config, overrides(args, rec, run_dir) + ["train.max_steps=0"])
    dist_ctx = init_dist(cfg.dist, cfg.train.devices)
    parts = build_everything(cfg, dist_ctx)
    sched = parts.schedule
    b, ctx = sched.batch_per_worker, dist_ctx.ctx[0]
    logger = RunLogger(run_dir)
    loops = {}
    for arm, cache_mb in (("engine, decode cache (default)", cfg.data.decode_cache_mb), ("engine, no cache", 0)):
        loader = parts.loader if cache_mb else build_loader(
            load_config(args.config, overrides(args, rec, run_dir) + ["data.decode_cache_mb=0"]),
            parts.loader.dataset, sched, dist_ctx)
        hooks = [LogHook(logger, cfg.train.log_every, True, dist_ctx),
                 VerifyHook(logger, cfg.eval, {}, run_dir, dist_ctx, parts.image_size)]
        loops[arm] = TrainLoop(parts.net, parts.loss_block, parts.trainers, loader, dist_ctx, sched, hooks)
    rs = np.random.RandomState(0)
    x = mx.nd.array(rs.uniform(0, 255, (b, 3, 112, 112)), ctx=ctx)
    y = mx.nd.array(rs.randint(0, parts.num_classes, b), ctx=ctx)

    def bare(n):
        for _ in range(n):
            with autograd.record():
                loss = parts.loss_block(parts.net(x), y)
            loss.backward()
            for t in parts.trainers.values():
                t.step(b)
        mx.nd.waitall()

    step = {arm: 0 for arm in loops}
    n = args.block_steps

    def engine(arm):
        loops[arm].run(step[arm], step[arm] + n)
        step[arm] += n
    # warm-up: hybridization, loader workers, and one epoch through the cache so that it is filled
    bare(n)
    for arm in loops:
        while step[arm] < max(n, sched.steps_per_epoch):
            engine(arm)
    rates = {"bare step": [], **{arm: [] for arm in loops}}
    arms = list(rates)
    cpu = {arm: [0.0, 0.0, 0.0] for arm in arms}     # CPU seconds: main thread, whole process, loader workers
    main_tid = threading.get_native_id()
    for r in range(args.blocks):
        for arm in arms[r % len(arms):] + arms[:r % len(arms)]:     # rotate the order: no arm always goes first
            workers = [p.pid for p in loops[arm].loader._procs] if arm in loops else []
            c0 = (thread_cpu(main_tid), time.process_time(), sum(proc_cpu(p) for p in workers))
            t0 = time.perf_counter()
            bare(n) if arm == "bare step" else engine(arm)
            rates[arm].append(n * b / (time.perf_counter() - t0))
            c1 = (thread_cpu(main_tid), time.process_time(), sum(proc_cpu(p) for p in workers))
            for i in range(3):
                cpu[arm][i] += c1[i] - c0[i]
    for loop in loops.values():
        loop.loader.close()
    logger.close()
    steps = args.blocks * n
    rates["_cpu_ms_per_step"] = {arm: [1000 * v / steps for v in c] for arm, c in cpu.items()}
    return rates


def thread_cpu(tid):
    """CPU seconds of thread ``tid`` of this process (user + system, from /proc)."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU seconds of process ``pid`` (user + system, from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase_bare(args, rec):
    import mxnet as mx
    import numpy as np
    from mxnet import autograd

    from gluonface.config import load_config
    from gluonface.parallel import init_dist
    from gluonface.engine.build import build_everything
    cfg = load_config(args.config, overrides(args, rec, os.path.join(args.tmp, "unused")))
    dist_ctx = init_dist(cfg.dist, cfg.train.devices)
    parts = build_everything(cfg, dist_ctx, loader=False)
    b, ctx = parts.schedule.batch_per_worker, dist_ctx.ctx[0]
    rs = np.random.RandomState(0)
    x = mx.nd.array(rs.uniform(0, 255, (b, 3, 112, 112)), ctx=ctx)
    y = mx.nd.array(rs.randint(0, parts.num_classes, b), ctx=ctx)

    def step():
        with autograd.record():
            loss = parts.loss_block(parts.net(x), y)
        loss.backward()
        for t in parts.trainers.values():
            t.step(b)
    for _ in range(10):       # same warm-up as the engine's excluded first log window
        step()
    mx.nd.waitall()
    t0 = time.perf_counter()
    for _ in range(args.steps - 10):
        step()
    mx.nd.waitall()
    return (args.steps - 10) * b / (time.perf_counter() - t0)


def phase_engine(args, rec, run_dir):
    from gluonface.config import load_config
    from gluonface.engine.runlog import read_metrics
    from gluonface.engine.train import train
    train(load_config(args.config, overrides(args, rec, run_dir)))
    rows = [r for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if r["kind"] == "train"]
    first, last = rows[0], rows[-1]
    with open(os.path.join(run_dir, "config.yaml")) as f:
        import yaml
        batch = yaml.safe_load(f)["derived"]["global_batch"]
    return (last["step"] - first["step"]) * batch / (last["time"] - first["time"])


def child(args):
    rec = os.path.join(args.tmp, "data", "train")
    if args.phase == "interleaved":
        value = phase_interleaved(args, rec)
    elif args.phase == "bare":
        value = phase_bare(args, rec)
    else:
        value = phase_engine(args, rec, os.path.join(args.tmp, f"run{args.index}"))
    print(json.dumps({"img_per_s": value}))


def run_child(args, phase, index):
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--tmp", args.tmp, "--index", str(index),
           "--config", args.config, "--steps", str(args.steps), "--blocks", str(args.blocks),
           "--block-steps", str(args.block_steps)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["img_per_s"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(REPO, "configs", "tiny_synthetic.yaml"))
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ids", type=int, default=40)
    p.add_argument("--per-id", type=int, default=16)
    p.add_argument("--out", default=os.path.join(HERE, "results", "engine.md"))
    p.add_argument("--blocks", type=int, default=24)
    p.add_argument("--block-steps", type=int, default=20)
    p.add_argument("--phase", choices=["bare", "engine", "interleaved"], help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        make_rec(os.path.join(tmp, "data", "train"), args.ids, args.per_id)
        interleaved = run_child(args, "interleaved", 0)
        cpu = interleaved.pop("_cpu_ms_per_step")
        for arm, values in interleaved.items():
            print(f"interleaved: {arm}: median {statistics.median(values):.1f} img/s, paired ratio "
                  f"{paired(values, interleaved['bare step'])[1]:.3f} ({', '.join(f'{v:.0f}' for v in values)})",
                  flush=True)
        bare, engine = [], []
        for i in range(args.repeats):
            bare.append(run_child(args, "bare", i))
            engine.append(run_child(args, "engine", i))
            print(f"repeat {i}: bare {bare[-1]:.1f} img/s, engine {engine[-1]:.1f} img/s", flush=True)
    b, e = statistics.median(bare), statistics.median(engine)
    overhead = 1.0 - e / b
    print(f"bare {b:.1f} img/s, engine {e:.1f} img/s, ratio {e / b:.3f}, overhead {100 * overhead:.1f}%")
    write_results(args, interleaved, cpu, bare, engine, b, e, overhead)


def paired(values, base):
    """Quartiles of the per-round ratios values[i] / base[i]."""
    ratios = sorted(v / b for v, b in zip(values, base))
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return q[0], q[1], q[2]


def write_results(args, interleaved, cpu, bare, engine, b, e, overhead):
    cmd = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')} .venv/bin/python bench/bench_engine.py " \
          f"--steps {args.steps} --repeats {args.repeats} --blocks {args.blocks} --block-steps {args.block_steps}"
    load = os.getloadavg()
    base = statistics.median(interleaved["bare step"])
    lines = [
        "## Training engine overhead (`bench/bench_engine.py`)", "",
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu_line()}, load average "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end.",
        f"Config `{os.path.relpath(args.config, REPO)}` (model, batch, loss). Command: `{cmd}`", "",
        f"### 1. Interleaved in one process ({args.blocks} blocks of {args.block_steps} steps per arm, medians)", "",
        "| arm | images/s per block | median | vs bare step (ratio of medians) | paired: median ratio to the "
        "bare block of the same round [quartiles] |", "|---|---|---|---|---|"]
    for arm, values in interleaved.items():
        m = statistics.median(values)
        q1, q2, q3 = paired(values, interleaved["bare step"])
        lines.append(f"| {arm} | {', '.join(f'{v:.0f}' for v in values)} | {m:.1f} | {m / base:.3f} "
                     f"(overhead {100 * (1 - m / base):.1f} %) | **{q2:.3f}** (overhead {100 * (1 - q2):.1f} %) "
                     f"[{q1:.3f}, {q3:.3f}] |")
    lines += ["", "Blocks run in rounds (one block per arm, order rotated each round); the paired figure divides "
              "each engine block by the bare block of its round, which cancels load that drifts slower than a "
              "round.", "",
              "CPU time per step in the same blocks (from /proc; not inflated by other jobs the way wall time is):",
              "", "| arm | main thread ms | whole process ms | loader workers ms | loop's own CPU (main-thread "
              "excess + workers) / CPU of a bare step |", "|---|---|---|---|---|"]
    bare_cpu = cpu["bare step"]
    for arm, (main_ms, proc_ms, work_ms) in cpu.items():
        own = (main_ms - bare_cpu[0]) + work_ms
        lines.append(f"| {arm} | {main_ms:.2f} | {proc_ms:.1f} | {work_ms:.2f} | "
                     f"{'–' if arm == 'bare step' else f'{own:.2f} ms = **{100 * own / bare_cpu[1]:.1f} %**'} |")
    lines += [
        "", f"### 2. End to end, separate processes ({args.steps} steps per run, {args.repeats} alternating runs)",
        "", "| run | images/s (each run) | median |", "|---|---|---|",
        f"| bare step (same built parts, batch in memory) | {', '.join(f'{v:.1f}' for v in bare)} | {b:.1f} |",
        f"| `gluonface train` (loader, hooks, logs) | {', '.join(f'{v:.1f}' for v in engine)} | {e:.1f} |", "",
        f"Engine / bare = **{e / b:.3f}** (overhead {100 * overhead:.1f} %; target ≤ 5 %).", ""]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
