"""``gluonface align``: align every image of a tree or a list, in worker processes, with a report.

Output under DST: the same relative paths holding aligned crops, ``landmarks.tsv`` (the template points
each crop was warped to, one line per written crop) and ``align_report.tsv`` (``path  status  reason``
for every image that was not a clean single-face alignment: no face, several faces, unreadable, ...).
"""
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from gluonface.align import pipeline
from gluonface.align.image import UnreadableImage, read_rgb, write_rgb
from gluonface.align.sources import lst_jobs, read_landmarks_file, tree_jobs
from gluonface.align.transform import arcface_template, parse_size
from gluonface.errors import GluonFaceError

REPORT_NAME, LANDMARKS_NAME = "align_report.tsv", "landmarks.tsv"


@dataclass(frozen=True)
class AlignOptions:
    """Per-image settings shipped to every worker (picklable)."""
    dst: str
    size: tuple = (112, 112)
    select: str = "largest"
    min_face: float = 40.0
    max_side: int = 1280
    thresholds: tuple = (0.6, 0.7, 0.8)
    omp_threads: int = 0  # 0: leave the MXNet default


@dataclass
class AlignSummary:
    """Counts per status, the totals, where the outputs went, and the wall time."""
    counts: Counter = field(default_factory=Counter)
    total: int = 0
    written: int = 0
    seconds: float = 0.0
    report_path: str = ""
    landmarks_path: str = ""

    def format(self):
        rate = self.total / self.seconds if self.seconds > 0 else 0.0
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return (f"aligned {self.written}/{self.total} images in {self.seconds:.1f} s ({rate:.1f} img/s): "
                f"{parts}\nlandmarks: {self.landmarks_path}\nreport:    {self.report_path}")


_STATE = {}  # per-process: the options and a lazily built detector


def _init_worker(options):
    if options.omp_threads:
        # Must happen before this process first imports MXNet (the pool uses 'spawn').
        os.environ["OMP_NUM_THREADS"] = str(options.omp_threads)
    _STATE.clear()
    _STATE["options"] = options


def _detector():
    if "detector" not in _STATE:
        from gluonface.align.mtcnn import MTCNNDetector
        opts = _STATE["options"]
        _STATE["detector"] = MTCNNDetector(min_face=opts.min_face, max_side=opts.max_side,
                                           thresholds=opts.thresholds)
    return _STATE["detector"]


def _process(job):
    """Align one job in this process; returns ``(rel, status, reason)`` and writes the crop."""
    opts = _STATE["options"]
    try:
        image = read_rgb(job.src)
    except UnreadableImage as exc:
        return job.rel, pipeline.UNREADABLE, str(exc)
    points = np.asarray(job.points) if job.points is not None else None
    try:
        result = pipeline.align_image(image, size=opts.size, points=points,
                                      detector=_detector() if points is None else None,
                                      select=opts.select, bbox=job.bbox)
    except GluonFaceError:
        raise  # a setup mistake (e.g. missing weights) stops the run with its fix
    except Exception as exc:  # noqa: BLE001 - one odd image must not stop a batch of millions
        return job.rel, pipeline.ERROR, f"{type(exc).__name__}: {exc}"
    if result.aligned:
        out = os.path.join(opts.dst, *job.rel.split("/"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        write_rgb(out, result.crop)
    return job.rel, result.status, result.reason


def _skip_job(job):
    return job.rel, pipeline.NO_LANDMARKS, "not listed in the landmarks file"


def _progress(total, enabled):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a declared dependency
        return None
    # disable=None: a bar on a terminal, none in logs
    return tqdm(total=total, unit="img", disable=None if enabled else True, file=sys.stderr,
                dynamic_ncols=True)


def _write_tsv(path, header, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(v).replace("\t", " ").replace("\n", " ") for v in row) + "\n")
    os.replace(tmp, path)


def align_tree(src, dst, *, landmarks=None, lst=None, size=112, select="largest", min_face=40,
               max_side=1280, thresholds=(0.6, 0.7, 0.8), workers=0, progress=True):
    """Align every image of ``src`` (a folder tree, or the images named in ``lst``) into ``dst``.

    Args:
        src: root of the source images (the root relative .lst paths refer to).
        dst: output root; created. Crops keep their relative paths (and file types).
        landmarks: optional landmarks TSV (relpath → 5 points): images are warped from these points and
            the detector is not used; images missing from it are reported ``no_landmarks``.
        lst: optional face2rec2/im2rec list; its bbox picks among detections, its 10 numbers are points.
        size: crop size: ``112``, ``"112x96"`` or ``(H, W)``.
        select: ``largest`` or ``central`` when the detector sees several faces.
        min_face: smallest face (px) the detector looks for. max_side: detection downscale limit.
        thresholds: P-Net, R-Net, O-Net face-probability thresholds.
        workers: worker processes (0 or 1: this process).
        progress: show a progress bar on stderr.
    Returns:
        :class:`AlignSummary`; ``dst/landmarks.tsv`` and ``dst/align_report.tsv`` are written.
    """
    if select not in pipeline.SELECT_MODES:
        raise GluonFaceError(f"--select {select!r} is unknown; fix: use one of {pipeline.SELECT_MODES}")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise GluonFaceError("SRC and DST are the same folder; fix: write the aligned tree elsewhere")
    if landmarks is None and min_face < 12:
        raise GluonFaceError(f"--min-face {min_face} is below MTCNN's 12-px window; fix: use --min-face 12 "
                             f"or more (upscale the images to find smaller faces)")
    thresholds = tuple(float(t) for t in thresholds)
    if len(thresholds) != 3 or not all(0 <= t < 1 for t in thresholds):
        raise GluonFaceError(f"thresholds {thresholds} must be three numbers in [0, 1); fix: e.g. "
                             f"--thresholds 0.6,0.7,0.8")
    size = parse_size(size)
    table = read_landmarks_file(landmarks) if landmarks else None
    jobs = lst_jobs(lst, src) if lst else tree_jobs(src, table)
    inside = os.path.join(os.path.abspath(dst), "")
    jobs = [j for j in jobs if not os.path.abspath(j.src).startswith(inside)]  # DST may sit inside SRC
    skipped = [j for j in jobs if table is not None and j.points is None]
    todo = [j for j in jobs if table is None or j.points is not None]
    os.makedirs(dst, exist_ok=True)
    workers = max(0, int(workers))
    cores = os.cpu_count() or 1
    options = AlignOptions(dst=os.path.abspath(dst), size=size, select=select, min_face=float(min_face),
                           max_side=int(max_side), thresholds=thresholds,
                           omp_threads=max(1, cores // workers) if workers > 1 else 0)
    start = time.perf_counter()
    results = [_skip_job(j) for j in skipped]
    bar = _progress(len(jobs), progress)
    if bar is not None:
        bar.update(len(skipped))
    if workers > 1 and len(todo) > 1:
        # 'spawn': MXNet's engine threads do not survive fork reliably.
        with mp.get_context("spawn").Pool(workers, _init_worker, (options,)) as pool:
            chunk = max(1, min(16, len(todo) // (workers * 4)))
            for row in pool.imap_unordered(_process, todo, chunksize=chunk):
                results.append(row)
                if bar is not None:
                    bar.update(1)
    else:
        _init_worker(replace(options, omp_threads=0))  # this process keeps its own thread settings
        try:
            for job in todo:
                results.append(_process(job))
                if bar is not None:
                    bar.update(1)
        finally:
            _STATE.clear()
    if bar is not None:
        bar.close()
    return _finish(results, options, time.perf_counter() - start)


def _finish(results, options, seconds):
    results.sort()
    template = arcface_template(options.size)
    summary = AlignSummary(total=len(results), seconds=seconds)
    summary.counts.update(status for _, status, _ in results)
    written = [rel for rel, status, _ in results if status in (pipeline.OK, pipeline.MULTIPLE)]
    summary.written = len(written)
    summary.landmarks_path = os.path.join(options.dst, LANDMARKS_NAME)
    summary.report_path = os.path.join(options.dst, REPORT_NAME)
    from gluonface.data.landmarks import write_landmarks
    write_landmarks(summary.landmarks_path, {rel: template.astype(np.float32) for rel in written})
    _write_tsv(summary.report_path, ["path", "status", "reason"],
               [r for r in results if r[1] != pipeline.OK])
    return summary
