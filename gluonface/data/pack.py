"""``gluonface pack``: an identity-folder tree or a ``.lst`` → insightface rec, in parallel, deterministically.

Workers decode/validate/encode images (:mod:`gluonface.data.pack_image`) in input order; the parent writes
them in that order, so the output bytes do not depend on the number of workers. Identities are labelled
``0..K-1`` in sorted order, counting only identities with at least one packed image. Beside the rec:
``prefix.identities.tsv`` (label, name, images) and ``prefix.skipped.tsv`` (every skipped file, reason).

``preprocess(image_rgb_uint8, relpath) -> image_rgb_uint8`` may transform each image (alignment) or raise
:class:`SkipImage`; with several workers it must be a top-level function or a picklable object.
"""
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from gluonface.data.lst import read_lst, scan_folder
from gluonface.data.pack_image import EncodeOptions, SkipImage, prepare_image  # noqa: F401 (SkipImage: API)
from gluonface.data.record_writer import RecordWriter
from gluonface.errors import GluonFaceError

_WORKER = {}


@dataclass
class PackReport:
    """What a pack run did. ``skipped`` lists ``(path, reason)`` in input order."""
    prefix: str
    images: int = 0
    identities: int = 0
    image_size: Tuple[int, int] = (0, 0)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    report_path: str = ""

    def summary(self, max_lines: int = 10) -> str:
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        lines = [f"packed {self.images} images of {self.identities} identities "
                 f"({self.image_size[0]}x{self.image_size[1]}) into {self.prefix}.rec in {self.seconds:.1f} s "
                 f"({rate:.0f} images/s)"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} (all listed in {self.report_path}):")
            lines += [f"  {path}: {reason}" for path, reason in self.skipped[:max_lines]]
            if len(self.skipped) > max_lines:
                lines.append(f"  ... and {len(self.skipped) - max_lines} more")
        return "\n".join(lines)


def _init_worker(opts, preprocess):
    import cv2
    cv2.setNumThreads(1)
    _WORKER["opts"], _WORKER["preprocess"] = opts, preprocess


def _work(task):
    ident, full, shown = task
    try:
        data, size = prepare_image(full, shown, _WORKER["opts"], _WORKER["preprocess"])
        return ident, shown, data, size, None
    except SkipImage as exc:
        return ident, shown, None, None, str(exc) or "skipped by preprocess"


def pack(src: str, prefix: str, *, size: Optional[Tuple[int, int]] = (112, 112), quality: int = 95,
         workers: int = 1, reencode: bool = False,
         preprocess: Optional[Callable] = None, progress: bool = True) -> PackReport:
    """Pack ``src`` (identity folder or ``.lst``) into ``prefix.rec/.idx`` + ``property``.

    Args:
        size: output ``(H, W)``; ``None`` keeps input sizes (then every image must have the first one's size).
        quality: JPEG quality of re-encoded images.
        workers: encoding processes (1 = in this process).
        reencode: also re-encode JPEGs that need no change (default: keep their bytes).
        preprocess: optional per-image transform, see the module docstring.

    Raises:
        GluonFaceError: bad source, or nothing could be packed (the report file is still written).
    """
    start = time.time()
    if os.path.isfile(src) and src.lower().endswith(".lst"):
        identities, skipped = read_lst(src), []
    else:
        identities, skipped = scan_folder(src)
    for ident in identities:
        if not ident.items:
            skipped.append((ident.name + "/", "identity folder has no images; fix: add images or remove it"))
    tasks = [(i, full, shown) for i, ident in enumerate(identities) for full, shown in ident.items]
    opts = EncodeOptions(size=tuple(size) if size else None, quality=quality, reencode=reencode)
    writer = RecordWriter(prefix)
    report = PackReport(prefix=writer.paths.prefix, report_path=writer.paths.skipped)
    counts, first_size = [], None
    from tqdm import tqdm
    bar = tqdm(total=len(tasks), unit="img", desc="pack", disable=not progress)
    if workers > 1:
        # spawn, not fork: a forked child can deadlock on locks held by the parent's threads (MXNet engine,
        # OpenCV pool) at fork time; spawned workers import only this module's light dependencies.
        ctx = mp.get_context("spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(opts, preprocess))
        results = pool.imap(_work, tasks, chunksize=16)
    else:
        _init_worker(opts, preprocess)
        pool, results = None, map(_work, tasks)
    try:
        for ident, shown, data, shape, reason in results:
            bar.update(1)
            if data is not None and first_size is not None and shape != first_size:
                data, reason = None, (f"size {shape[1]}x{shape[0]} differs from the first image's "
                                      f"{first_size[1]}x{first_size[0]}; fix: pass --size H W to resize all")
            if data is None:
                skipped.append((shown, reason))
                continue
            first_size = first_size or shape
            if not counts or counts[-1][0] != ident:
                counts.append([ident, 0])
            counts[-1][1] += 1
            writer.add_image(data, len(counts) - 1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    report.image_size = first_size or tuple(size or (0, 0))
    writer.close(image_size=report.image_size, num_classes=len(counts))
    _write_tables(writer.paths, identities, counts, skipped)
    report.images, report.identities = sum(c for _, c in counts), len(counts)
    report.skipped, report.seconds = skipped, time.time() - start
    if report.images == 0:
        raise GluonFaceError(f"nothing could be packed from {src}: all {len(tasks)} images were skipped "
                             f"(reasons in {writer.paths.skipped}); fix: check the source images")
    return report


def _write_tables(paths, identities, counts, skipped) -> None:
    with open(paths.identities, "w", encoding="utf-8", newline="\n") as f:
        f.write("label\tname\timages\n")
        for label, (ident, n) in enumerate(counts):
            f.write(f"{label}\t{identities[ident].name}\t{n}\n")
    with open(paths.skipped, "w", encoding="utf-8", newline="\n") as f:
        f.write("path\treason\n")
        for shown, reason in skipped:
            f.write(f"{shown}\t{reason}\n")


def read_identity_names(prefix) -> List[str]:
    """Identity names of a packed rec, indexed by label (from ``prefix.identities.tsv``)."""
    from gluonface.data.record_paths import resolve_prefix
    path = resolve_prefix(prefix, must_exist=False).identities
    if not os.path.isfile(path):
        raise GluonFaceError(f"no identity table {path}; fix: it is written by `gluonface pack`, re-pack the rec")
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f.read().splitlines()[1:] if line.strip()]
    return [name for _, name, _ in sorted(rows, key=lambda r: int(r[0]))]
