"""Benchmark gluonface.align: detector speed, landmark consistency on a real photo, warp accuracy.

Run:  OMP_NUM_THREADS=2 .venv/bin/python bench/bench_align.py [--repeats 15] [--quick]

1. Speed: detection + alignment of 512x512 photos (scikit-image's astronaut and flipped/rotated/scaled
   variants) at min face 20 and 40 px, images/s (wall) and CPU ms/image, for
     - this detector (hybridized, P-Net pyramid packed into two calls, pooling as strided slices),
     - hybridized, one P-Net call per pyramid level,
     - imperative (not hybridized), one P-Net call per level,
     - baseline measured in the same run, a straightforward port: imperative, one call per level and
       MXNet's Pooling operator.
   Printed as a ratio against the baseline. Also `align_tree` on a folder with 1 and 2 processes.
2. Consistency: points on the astronaut under flip, ±15/±30° rotation, 256/160/96 px downscales and a
   90° rotation, mapped back and compared with the points on the original (px and NME = / eye distance),
   plus the error against hand-annotated points.
3. Warp accuracy: blobs rendered at known points under random poses, aligned from the true points; the
   blob centroids in the crop against the template (px). Synthetic raw faces (gluonface synth --raw):
   template-fit residual of the true points (the face shape vs the mean template, not an error of the
   warp) and how often MTCNN finds these cartoon faces, with its NME against the true points.
"""
import argparse
import contextlib
import os
import time

import cv2
import numpy as np
import skimage.data

from gluonface.align import align_image, arcface_template, transform_points
from gluonface.align import nets
from gluonface.align.mtcnn import MTCNNDetector
from gluonface.align.transform import ARCFACE_112, align_face

LINES = []


def emit(text=""):
    """Print a result line and keep it for the results file."""
    print(text, flush=True)
    LINES.append(text)


HAND_POINTS = np.array([[202.5, 101.3], [246.7, 103.3], [223.0, 127.5], [203.0, 140.0], [244.2, 141.3]])


def photos():
    """512x512 RGB test photos: the astronaut and variants with a known point mapping ``f(points)``."""
    img = skimage.data.astronaut()
    out = {"original": (img, lambda p: p)}
    out["flip"] = (np.ascontiguousarray(img[:, ::-1]),
                   lambda p: np.column_stack([511 - p[:, 0], p[:, 1]])[[1, 0, 2, 4, 3]])
    for angle in (-30, -15, 15, 30, 90):
        rot = cv2.getRotationMatrix2D((256, 256), angle, 1.0)
        out[f"rot{angle:+d}"] = (cv2.warpAffine(img, rot, (512, 512)),
                                 lambda p, rot=rot: transform_points(rot, p))
    for side in (256, 160, 96):
        s = side / 512
        out[f"scale{side}"] = (cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA),
                               lambda p, s=s: (p + 0.5) * s - 0.5)
    return out


def pooling_op(F, x, kernel, stride, full):
    """The straightforward max-pooling (MXNet's Pooling operator, oneDNN on CPU): the baseline's."""
    return F.Pooling(x, kernel=(kernel, kernel), stride=(stride, stride), pool_type="max",
                     pooling_convention="full" if full else "valid")


@contextlib.contextmanager
def baseline_pooling(active):
    """Swap gluonface.align.nets' pooling for the plain Pooling operator while ``active``."""
    saved = nets._max_pool
    if active:
        nets._max_pool = pooling_op
    try:
        yield
    finally:
        nets._max_pool = saved


def time_detector(det, images, repeats):
    """Median wall and CPU seconds per image (detect + align) over ``repeats`` passes."""
    for img in images:
        align_image(img, detector=det)  # warm-up: graph build per input shape
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for img in images:
            align_image(img, detector=det)
        walls.append((time.perf_counter() - w0) / len(images))
        cpus.append((time.process_time() - c0) / len(images))
    return float(np.median(walls)), float(np.median(cpus))


def bench_speed(repeats):
    variants = photos()
    images = [variants[k][0] for k in ("original", "flip", "rot-15", "rot+15")]
    emit("\n## Speed: detect + align, 512x512 photos (median of %d passes over %d images)" % (repeats,
                                                                                            len(images)))
    emit("| min face | variant | images/s | ms/image (wall) | CPU ms/image | speed-up vs baseline |")
    emit("|---|---|---|---|---|---|")
    configs = [("packed pyramid, hybridized (default)", dict()),
               ("per-level P-Net, hybridized", dict(pack_pyramid=False)),
               ("per-level, imperative", dict(pack_pyramid=False, hybridize=False)),
               ("baseline: per-level, imperative, Pooling operator", dict(pack_pyramid=False, hybridize=False))]
    estimates = []
    for min_face in (40, 20):
        dets = [(name, MTCNNDetector(min_face=min_face, **kw)) for name, kw in configs]
        # interleave the variants so that machine load hits all of them alike
        results = {name: [] for name, _ in dets}
        for _ in range(3):
            for name, det in dets:
                with baseline_pooling(name.endswith("Pooling operator")):
                    results[name].append(time_detector(det, images, max(1, repeats // 3)))
        base = np.median([w for w, _ in results[configs[-1][0]]])
        cpu_default = np.median([c for _, c in results[configs[0][0]]])
        estimates.append((min_face, cpu_default))
        for name, _ in dets:
            wall = np.median([w for w, _ in results[name]])
            cpu = np.median([c for _, c in results[name]])
            emit(f"| {min_face} | {name} | {1 / wall:.1f} | {wall * 1e3:.1f} | {cpu * 1e3:.1f} | "
                  f"{base / wall:.2f}x |")
    cores = os.cpu_count() or 1
    for min_face, cpu in estimates:
        emit(f"CPU-bound throughput of the default detector at min face {min_face}: {cores} cores / "
             f"{cpu * 1e3:.1f} CPU ms = {cores / cpu:.1f} images/s (an estimate for an otherwise idle machine "
             f"running one single-threaded worker per core; wall figures above include waiting for the CPU)")


def bench_batch(count):
    """``align_tree`` wall throughput on a folder of 512x512 photos, 1 process vs 2 workers."""
    import tempfile
    from gluonface.align.batch import align_tree
    variants = photos()
    names = ["original", "flip", "rot-15", "rot+15", "rot-30", "rot+30"]
    emit(f"\n## `gluonface align` on a folder of {count} 512x512 photos (min face 40, wall clock incl. "
         f"start-up)")
    emit("| workers | images/s | seconds |")
    emit("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            img = variants[names[i % len(names)]][0]
            path = os.path.join(tmp, "src", f"id{i % 4}", f"{i:03d}.jpg")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            cv2.imwrite(path, img[:, :, ::-1])
        for workers in (1, 2):
            start = time.perf_counter()
            summary = align_tree(os.path.join(tmp, "src"), os.path.join(tmp, f"out{workers}"), min_face=40,
                                 workers=workers, progress=False)
            sec = time.perf_counter() - start
            emit(f"| {workers} | {summary.total / sec:.1f} | {sec:.1f} (aligned {summary.written}) |")


def bench_consistency():
    det = MTCNNDetector(min_face=20)
    variants = photos()
    ref = det.detect(variants["original"][0])[0].points.astype(np.float64)
    iod = np.linalg.norm(ref[1] - ref[0])
    hand = np.linalg.norm(ref - HAND_POINTS, axis=1)
    emit("\n## Landmark consistency on the astronaut (min face 20)")
    emit(f"vs hand-annotated points: mean {hand.mean():.2f} px, max {hand.max():.2f} px, "
          f"NME {hand.mean() / iod:.3f} (eye distance {iod:.1f} px)")
    emit("| variant | faces | mean px | max px | NME |")
    emit("|---|---|---|---|---|")
    for name, (img, mapping) in variants.items():
        if name == "original":
            continue
        faces = det.detect(img)
        expected = mapping(ref)
        if not faces:
            emit(f"| {name} | 0 | - | - | - |")
            continue
        best = min(faces, key=lambda f: np.abs(f.points - expected).sum())
        err = np.linalg.norm(best.points - expected, axis=1)
        scale = np.linalg.norm(expected[1] - expected[0])
        emit(f"| {name} | {len(faces)} | {err.mean():.2f} | {err.max():.2f} | {err.mean() / scale:.3f} |")
    result = align_image(variants["original"][0], detector=det)
    res = np.linalg.norm(transform_points(result.matrix, result.points) - ARCFACE_112, axis=1)
    emit(f"aligned 112x112 crop: template residual of the fitted points mean {res.mean():.2f} px "
          f"(a 5-point similarity on a real face; an unaligned crop is off by 10+ px)")


def _blob_helpers():
    """The tests' blob renderer and centroid finder (tests/blob_landmarks.py), shared rather than copied."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from blob_landmarks import blob_centres, render_blobs
    return render_blobs, blob_centres


def bench_warp(count):
    render_blobs, blob_centres = _blob_helpers()
    rng = np.random.default_rng(0)
    emit("\n## Warp accuracy from true points")
    for size in (112, "112x96", 224):
        errs = []
        for _ in range(count):
            pose = cv2.getRotationMatrix2D((56, 56), rng.uniform(-40, 40), rng.uniform(1.2, 3.0))
            pose[:, 2] += rng.uniform(40, 120, 2)
            pts = transform_points(pose, ARCFACE_112)
            sigma = 1.6 * np.hypot(pose[0, 0], pose[1, 0])  # blobs scale with the face
            crop, _ = align_face(render_blobs(pts, (400, 420), sigma), pts, size)
            template = arcface_template(size)
            r = int(round(5 * template[1, 0] / ARCFACE_112[1, 0]))  # window grows with the crop
            errs.append(np.linalg.norm(blob_centres(crop, template, r) - template, axis=1))
        errs = np.concatenate(errs)
        emit(f"blobs -> {size}: warped point error mean {errs.mean():.3f} px, max {errs.max():.3f} px "
              f"({count} random poses)")
    try:
        from gluonface.data.synthetic import SynthSpec, render_image
    except ImportError:
        emit("(gluonface.data.synthetic not available: synthetic-face part skipped)")
        return
    spec = SynthSpec(identities=count, images_per_id=2, raw=True, seed=7)
    det = MTCNNDetector(min_face=20)
    iod_t = np.linalg.norm(ARCFACE_112[1] - ARCFACE_112[0])
    fit, found, nme = [], 0, []
    for i in range(count):
        for j in range(2):
            bgr, truth = render_image(spec, i, j)
            result = align_image(bgr[:, :, ::-1].copy(), points=truth)
            fit.append(np.linalg.norm(transform_points(result.matrix, truth) - ARCFACE_112, axis=1).mean())
            faces = det.detect(bgr[:, :, ::-1].copy())
            if faces:
                found += 1
                best = min(faces, key=lambda f: np.abs(f.points - truth).sum())
                nme.append(np.linalg.norm(best.points - truth, axis=1).mean()
                           / np.linalg.norm(truth[1] - truth[0]))
    n = 2 * count
    emit(f"synthetic raw faces ({n}): template-fit residual of the true points mean "
          f"{np.mean(fit):.2f} px at 112 (NME {np.mean(fit) / iod_t:.3f}; face shape vs template)")
    emit(f"MTCNN on the synthetic cartoon faces: found {found}/{n}"
          + (f", NME vs true points {np.mean(nme):.3f}" if nme else ""))


NOTES = """
Reading these figures:
- Under a load average well above the 2 cores, every process gets a fraction of a core: wall-clock
  images/s are not representative. The variants are run interleaved, so the speed-up column and the CPU
  ms/image (MXNet's engine threads included) are the fairer comparison.
- The 'CPU-bound throughput' line divides the cores by CPU ms/image: with OMP_NUM_THREADS=1 it is the
  rate two single-threaded workers would reach on an otherwise idle machine (an estimate, not a wall-clock
  measurement).
- The folder table includes spawning the workers (each imports MXNet and loads the nets); on a loaded
  machine two workers can be slower than one.
- MTCNN is not rotation invariant: no face at 90 degrees (as in the original). It finds only part of the
  synthetic cartoon faces, which is why `gluonface synth --raw` output is aligned from its landmarks.tsv."""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and samples")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "align.md"))
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    from gluonface.machine import cpu_line
    cpu = cpu_line()
    load = os.getloadavg()[0]
    emit("## Alignment (gluonface.align): MTCNN speed, landmark consistency, warp accuracy")
    emit()
    emit(f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu}, "
         f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, 1-min load average at start "
         f"{load:.1f}" + (" (other jobs were running: wall-clock figures are inflated; the ratios and CPU "
                          "ms are the fairer comparison)" if load > 1.5 else ""))
    emit(f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')} .venv/bin/python "
         f"bench/bench_align.py{' --quick' if args.quick else ''}`")
    bench_speed(repeats)
    bench_batch(24 if args.quick else 48)
    bench_consistency()
    bench_warp(5 if args.quick else 20)
    emit(f"\n1-min load average at the end: {os.getloadavg()[0]:.1f}")
    emit(NOTES)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(LINES) + "\n")


if __name__ == "__main__":
    main()
