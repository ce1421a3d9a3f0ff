"""``embed`` throughput with flip: the library's uint8 layout path against NumPy's transpose, in one process.

``embed_raw`` turns each uint8 (N, H, W, 3) batch into the (N, 3, H, W) the graph takes and, for the flip
test-time augmentation, into its mirror. The baseline here is the NumPy form it used before: a strided transpose
straight to the forward's dtype and a reversed copy of that. The library form (``channels_first`` + ``mirror``)
splits channels and mirrors rows in uint8 through OpenCV, then casts once. Both arms embed the same images with
the same ``FaceEmbedder`` (float32 and INT8 exports of an untrained iresnet_tiny with face statistics,
``backend='mxnet'``), alternating over rounds; outputs are checked identical first.

    OMP_NUM_THREADS=2 python bench/bench_embed_layout.py [--images 256] [--rounds 7] [--out FILE]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from probe_int8_floor import emit, export  # noqa: E402  (bench/ is not a package)


def numpy_embed_raw(forward, images, batch_size=64):
    """The baseline: NumPy's transpose to the forward's dtype and its reversed copy for the mirror, with flip."""
    import numpy as np
    from gluonface.evaluate.verification import iter_batches
    dtype = np.uint8 if getattr(forward, "input_dtype", None) == np.uint8 else np.float32
    out = []
    for batch in iter_batches(images, batch_size):
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=dtype)
        out.append(np.asarray(forward(x), np.float32) + np.asarray(forward(np.ascontiguousarray(x[..., ::-1])), np.float32))
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out")
    a = ap.parse_args()
    from gluonface.machine import cpu_line, use_inference_engine
    use_inference_engine("cpu")
    import numpy as np
    from gluonface.evaluate.verification import embed_raw
    from gluonface.export.embedder import FaceEmbedder
    threads = os.environ.setdefault("OMP_NUM_THREADS", "2")
    prefix = export("iresnet_tiny", tempfile.mkdtemp(prefix="bench_embed_layout_"))[0]
    images = np.random.default_rng(0).integers(0, 256, (a.images, 112, 112, 3), dtype=np.uint8)
    forms = {"float32": FaceEmbedder.from_path(prefix, backend="mxnet"),
             "INT8": FaceEmbedder.from_path(prefix + "-int8", backend="mxnet")}
    arms = {"NumPy transpose + reversed copy (before)": numpy_embed_raw, "uint8 via OpenCV (library)": embed_raw}
    for emb in forms.values():
        if not np.array_equal(numpy_embed_raw(emb, images), embed_raw(emb, images)):
            raise SystemExit("the two layout paths disagree")
    got = {(f, k): [] for f in forms for k in arms}
    for _ in range(a.rounds):
        for f, emb in forms.items():
            for k, run in arms.items():
                start = time.perf_counter()
                run(emb, images)
                got[(f, k)].append(a.images / (time.perf_counter() - start))
    lines = ["### `embed` with flip: uint8 layout path against NumPy's (`bench/bench_embed_layout.py`)", "",
             f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {cpu_line()}, OMP_NUM_THREADS={threads}, MXNet NaiveEngine; "
             f"untrained iresnet_tiny, {a.images} images of 112x112 in batches of 64, flip on; images/s, median "
             f"(best) of {a.rounds} alternating rounds; outputs identical; load average at end "
             f"{os.getloadavg()[0]:.1f}.", "",
             "| model form | " + " | ".join(arms) + " | speed-up (median of rounds) |", "|---|---|---|---|"]
    for f in forms:
        base, lib = got[(f, list(arms)[0])], got[(f, list(arms)[1])]
        ratio = statistics.median(x / y for x, y in zip(lib, base))
        lines.append(f"| {f} | {statistics.median(base):.0f} ({max(base):.0f}) | {statistics.median(lib):.0f} "
                     f"({max(lib):.0f}) | **{ratio:.2f}×** |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
