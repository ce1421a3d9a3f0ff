"""Data-layer benchmarks (issue 2 §6), each printed beside a baseline measured in the same run.

1. Read pipeline: decode + random flip + normalise → NCHW float32 batches of 128 from a rec of 112×112
   JPEGs. gluonface TrainLoader (2 workers) vs. the plain Gluon way, ``gluon.data.DataLoader`` over the
   same dataset with a per-sample transform (2 workers).
2. Pack: a folder of 10,000 112×112 JPEGs → rec. ``gluonface pack`` (2 workers, re-encoding, and the
   default that keeps already-correct JPEG bytes) vs. a single-process ``mx.recordio`` loop that reads,
   decodes, re-encodes and writes each image.
3. Synthetic generation: images/s of ``gluonface synth`` in one process (target ≥ 500/s per core).

    OMP_NUM_THREADS=1 python bench/bench_data.py [--images 10000] [--batches 40] [--workdir /tmp/gfbench]
"""
import argparse
import os
import shutil
import time

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


def bench_synth(n: int) -> float:
    from gluonface.data.synthetic import SynthSpec, render_image
    spec = SynthSpec(identities=max(1, n // 20), images_per_id=20, seed=5)
    cv2.setNumThreads(1)
    start = time.process_time()
    for i in range(n):
        img, _ = render_image(spec, i // 20, i % 20)
        cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return n / (time.process_time() - start)


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
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
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

    synth = bench_synth(args.synth)
    print(f"synth: {synth:.0f} img/s per core (CPU time, render + JPEG encode, 112x112)")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
