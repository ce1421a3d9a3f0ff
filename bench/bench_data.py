"""Data-layer benchmarks (issue 2 §6), each printed beside a baseline measured in the same run.

1. Read pipeline: decode + random flip + normalise → NCHW float32 batches of 128 from a rec of 112×112
   JPEGs. gluonface TrainLoader (2 workers) vs. the plain Gluon way, ``gluon.data.DataLoader`` over the
   same dataset with a per-sample transform (2 workers).
2. Pack: a folder of 10,000 112×112 JPEGs → rec. ``gluonface pack`` (2 workers, re-encoding, and the
   default that keeps already-correct JPEG bytes) vs. a single-process ``mx.recordio`` loop that reads,
   decodes, re-encodes and writes each image.
3. Synthetic generation: images per CPU-second of render + JPEG encode in one process (target ≥ 500/s per
   core) beside the renderer of commit 6ee2626 (loaded from git history) interleaved in the same run; the
   same for ``generate`` with its file writes; ``gluonface synth`` wall-clock for 2000 images, 1 and 2 workers.

    OMP_NUM_THREADS=1 python bench/bench_data.py [--images 10000] [--batches 40] [--workdir /tmp/gfbench]
    OMP_NUM_THREADS=1 python bench/bench_data.py --synth-only [--synth 1000]
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
import types

import cv2
import numpy as np


def make_folder(root: str, n_images: int, unique: int = 400) -> None:
    """``n_images`` distinct-named JPEGs (112×112, synthetic faces reused) in 10-image identity folders."""
    from gluonface.data.synthetic import SynthSpec, render_image
    spec = SynthSpec(identities=unique // 10, images_per_id=10, seed=123)
    bufs = [cv2.imencode(".jpg", render_image(spec, i // 10, i % 10)[0], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
            .tobytes() for i in range(unique)]
    for k in range(n_images):
        folder = os.path.join(root, f"id{k // 10:05d}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{k % 10:02d}.jpg"), "wb") as f:
            f.write(bufs[k % unique])


def bench_pack_baseline(root: str, prefix: str) -> float:
    import mxnet as mx
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    start = time.perf_counter()
    w = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for key, path in enumerate(files):
        with open(path, "rb") as f:
            img = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
        buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        label = float(key // 10)
        w.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, label, key, 0), buf))
    w.close()
    return len(files) / (time.perf_counter() - start)


def bench_pack(root: str, prefix: str, reencode: bool) -> float:
    from gluonface.data.pack import pack
    rep = pack(root, prefix, workers=2, reencode=reencode, progress=False)
    return rep.images / rep.seconds


def bench_read(prefix: str, batches: int) -> tuple:
    from mxnet import gluon
    from gluonface.data.loader import TrainLoader
    from gluonface.data.record import FaceRecordDataset
    from gluonface.data.transforms import AugmentConfig
    ds = FaceRecordDataset(prefix)
    loader = TrainLoader(ds, 128, seed=0, augment=AugmentConfig(flip=True), normalize=True, num_workers=2)
    it = iter(loader)
    next(it)  # start-up (fork) excluded
    start = ours = time.perf_counter()
    for _ in range(batches):
        next(it)
    ours = batches * 128 / (time.perf_counter() - start)
    loader.close()

    def transform(img, label):
        if np.random.rand() < 0.5:
            img = img[:, ::-1]
        return ((img.astype(np.float32) - 127.5) / 128).transpose(2, 0, 1), np.float32(label)
    dl = gluon.data.DataLoader(ds.transform(transform), batch_size=128, shuffle=True, num_workers=2,
                               last_batch="discard")
    it = iter(dl)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    theirs = batches * 128 / (time.perf_counter() - start)
    return ours, theirs


BASELINE_COMMIT = "6ee2626"  # the synthetic renderer before the per-identity point model


def baseline_renderer():
    """``render_image`` of the synthetic renderer at ``BASELINE_COMMIT``, loaded from git history, with the
    identity parameters drawn once per identity as the old ``gluonface synth`` did; None without git."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        src = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:gluonface/data/synthetic_face.py"], cwd=repo,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    old = types.ModuleType("synthetic_face_at_" + BASELINE_COMMIT)
    exec(compile(src, f"{BASELINE_COMMIT}:gluonface/data/synthetic_face.py", "exec"), old.__dict__)
    params = {}

    def render_image(spec, identity, image):
        if identity not in params:
            params[identity] = old.identity_params(np.random.default_rng([spec.seed, 1, identity]))
        rng = np.random.default_rng([spec.seed, 2, identity, image])
        size = (spec.size, spec.size)
        return old.render(params[identity], rng, size, old.pose_affine(rng, size, False), spec.nuisance)
    return render_image


def bench_synth(n: int) -> tuple:
    """Images per CPU-second of render + JPEG encode (112×112, one process): ours, and the baseline's
    (None without git), interleaved one identity of 20 images at a time so both see the same load."""
    from gluonface.data.synthetic import SynthSpec, render_image
    baseline = baseline_renderer()
    spec = SynthSpec(identities=n // 20 + 1, images_per_id=20, seed=5)
    cv2.setNumThreads(1)

    def run(render, identity):
        start = time.process_time()
        for j in range(spec.images_per_id):
            cv2.imencode(".jpg", render(spec, identity, j)[0], [cv2.IMWRITE_JPEG_QUALITY, 95])
        return time.process_time() - start

    ours = theirs = 0.0
    for render in filter(None, (render_image, baseline)):
        run(render, n // 20)  # warm-up identity: first-call costs (imports, noise bank) are not the rate
    for identity in range(n // 20):
        ours += run(render_image, identity)
        theirs += run(baseline, identity) if baseline else 0.0
    return n // 20 * 20 / ours, (n // 20 * 20 / theirs if baseline else None)


def bench_synth_generate(workdir: str, n: int) -> float:
    """Images per CPU-second of ``generate`` in this process: render, encode, write files and landmarks.tsv."""
    from gluonface.data.synthetic import SynthSpec, generate
    start = time.process_time()
    generate(os.path.join(workdir, "synth"), SynthSpec(identities=n // 20, images_per_id=20, seed=6),
             workers=1, progress=False)
    return n // 20 * 20 / (time.process_time() - start)


def bench_synth_cli(workdir: str, n: int, workers: int) -> float:
    """Wall-clock seconds of ``gluonface synth`` for ``n`` images, process start-up included."""
    out = os.path.join(workdir, f"synth_cli_{workers}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gluonface", "synth", out, "--identities", str(n // 20),
                    "--images-per-id", "20", "--workers", str(workers), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def report_synth(workdir: str, n: int) -> None:
    ours, theirs = bench_synth(n)
    vs = f"  (baseline {BASELINE_COMMIT}: {theirs:.0f} img/s, {ours / theirs:.2f}x)" if theirs else ""
    print(f"synth: render + JPEG encode 112x112, one process: {ours:.0f} img/s per core (CPU time){vs}")
    print(f"synth: generate() --workers 1 (files + landmarks.tsv): {bench_synth_generate(workdir, n):.0f} "
          f"img/s per core (CPU time)")
    for workers in (1, 2):
        sec = bench_synth_cli(workdir, 2000, workers)
        print(f"synth: gluonface synth 2000 images --workers {workers}: {sec:.2f} s wall "
              f"({2000 / sec:.0f} img/s, process start-up included)", flush=True)


def bench_decode(root: str, n: int = 2000) -> float:
    """Calibration: single-process cv2.imdecode rate of the same JPEGs (≈9000/s per idle core here)."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)[:n]
    bufs = [np.fromfile(f, np.uint8) for f in files]
    cv2.setNumThreads(1)
    start = time.perf_counter()
    for b in bufs:
        cv2.imdecode(b, cv2.IMREAD_COLOR)
    return len(bufs) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description="gluonface data-layer benchmarks")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--synth", type=int, default=1000)
    parser.add_argument("--workdir", default="/tmp/gluonface-bench-data")
    parser.add_argument("--synth-only", action="store_true", help="only the synthetic-generation section")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    if args.synth_only:
        report_synth(args.workdir, args.synth)
        shutil.rmtree(args.workdir, ignore_errors=True)
        return
    root = os.path.join(args.workdir, "folder")
    make_folder(root, args.images)
    print(f"folder of {args.images} 112x112 JPEGs ready", flush=True)
    print(f"calibration: cv2.imdecode in one process {bench_decode(root):.0f} img/s "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)

    base = bench_pack_baseline(root, os.path.join(args.workdir, "base"))
    ours_re = bench_pack(root, os.path.join(args.workdir, "ours_re", "train"), reencode=True)
    ours_keep = bench_pack(root, os.path.join(args.workdir, "ours_keep", "train"), reencode=False)
    print(f"pack: baseline single-process mx.recordio loop {base:.0f} img/s")
    print(f"pack: gluonface pack --workers 2 --reencode   {ours_re:.0f} img/s  ({ours_re / base:.2f}x baseline)")
    print(f"pack: gluonface pack --workers 2 (keep bytes) {ours_keep:.0f} img/s  ({ours_keep / base:.2f}x baseline)")

    ours, theirs = bench_read(os.path.join(args.workdir, "ours_re", "train"), args.batches)
    print(f"read: gluon DataLoader (2 workers) baseline    {theirs:.0f} img/s")
    print(f"read: gluonface TrainLoader (2 workers)        {ours:.0f} img/s  ({ours / theirs:.2f}x baseline)")

    report_synth(args.workdir, args.synth)
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
