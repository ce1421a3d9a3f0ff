"""``gluonface synth``: write procedural identities as an identity-folder tree with true landmarks.

``OUT/s<seed>_id00000/000.jpg ...`` plus ``OUT/landmarks.tsv``. Every image's randomness comes from
``(seed, identity, image)`` only, so the bytes are the same for any number of worker processes.
"""
import functools
import multiprocessing as mp
import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np

from gluonface.data.landmarks import write_landmarks
from gluonface.data.synthetic_face import FaceModel, compile_face, identity_params
from gluonface.data.synthetic_render import NUMBERS, pose_affine, render, split_numbers
from gluonface.errors import GluonFaceError

JPEG_QUALITY = 95


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. ``raw`` gives unaligned faces on larger canvases (``raw_size`` range, pixels)."""
    identities: int
    images_per_id: int
    size: int = 112
    seed: int = 0
    raw: bool = False
    raw_size: Tuple[int, int] = (160, 250)
    nuisance: float = 1.0


def identity_name(seed: int, i: int) -> str:
    """Folder name of identity ``i``; it names the seed too, so sets made with different seeds never share
    a name (``gluonface pairs --exclude-identities-of`` matches identities by name)."""
    return f"s{seed}_id{i:05d}"


@functools.lru_cache(maxsize=64)
def _identity(seed: int, identity: int) -> Tuple[FaceModel, np.random.Philox]:
    """An identity's compiled face and the Philox generator keyed to it (cached: an identity's images are
    usually rendered one after another)."""
    model = compile_face(identity_params(np.random.default_rng([seed, 1, identity])))
    return model, np.random.Philox(key=np.random.SeedSequence([seed, 2, identity]).generate_state(2, np.uint64))


def image_numbers(bitgen: np.random.Philox, image: int) -> np.ndarray:
    """Image ``image``'s ``(NUMBERS,)`` uniforms: the identity's Philox stream from counter ``(0, image, 0, 0)``.

    Counter-based, so any image is drawn directly, in any order, by any worker. Setting the state costs a
    fifth of building a new Philox.
    """
    counter = np.array([0, image, 0, 0], np.uint64)
    bitgen.state = {"bit_generator": "Philox", "state": {"counter": counter, "key": bitgen.state["state"]["key"]},
                    "buffer": np.zeros(4, np.uint64), "buffer_pos": 4, "has_uint32": 0, "uinteger": 0}
    return np.random.Generator(bitgen).random(NUMBERS)


def render_image(spec: SynthSpec, identity: int, image: int) -> Tuple[np.ndarray, np.ndarray]:
    """Render one image: ``(BGR uint8 (H, W, 3), landmarks (5, 2) float32)``; pure in (spec, identity, image)."""
    model, bitgen = _identity(spec.seed, identity)
    parts = split_numbers(image_numbers(bitgen, image))
    if spec.raw:
        lo, hi = spec.raw_size
        size = tuple(lo + int(u * (hi - lo + 1)) for u in parts["size"])
    else:
        size = (spec.size, spec.size)
    affine = pose_affine(parts["pose"], size, spec.raw)
    return render(model, parts, size, affine, spec.nuisance)


def _write_identity(args) -> List[Tuple[str, np.ndarray]]:
    spec, out, identity = args
    cv2.setNumThreads(1)  # one process per core already
    folder = identity_name(spec.seed, identity)
    os.makedirs(os.path.join(out, folder), exist_ok=True)
    marks = []
    for j in range(spec.images_per_id):
        img, pts = render_image(spec, identity, j)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        rel = f"{folder}/{j:03d}.jpg"
        with open(os.path.join(out, rel), "wb") as f:
            f.write(buf.tobytes())
        marks.append((rel, pts))
    return marks


def generate(out: str, spec: SynthSpec, workers: int = 1, progress: bool = True) -> Dict[str, int]:
    """Write ``spec.identities`` × ``spec.images_per_id`` images under ``out`` and ``out/landmarks.tsv``.

    Returns:
        ``{"identities": K, "images": N}``.
    """
    if spec.identities < 1 or spec.images_per_id < 1:
        raise GluonFaceError("synth needs --identities >= 1 and --images-per-id >= 1; fix: pass positive counts")
    if not spec.raw and spec.size < 32:
        raise GluonFaceError(f"--size {spec.size} is too small to draw a face; fix: use --size 32 or more "
                             f"(112 is the ArcFace size)")
    if os.path.isdir(out) and any(e.startswith("s") and "_id" in e for e in os.listdir(out)):
        raise GluonFaceError(f"{out} already holds identity folders; fix: choose an empty output folder")
    os.makedirs(out, exist_ok=True)
    tasks = [(spec, out, i) for i in range(spec.identities)]
    marks: Dict[str, np.ndarray] = {}
    from tqdm import tqdm
    bar = tqdm(total=spec.identities * spec.images_per_id, unit="img", desc="synth", disable=not progress)
    if workers > 1:
        # spawn, not fork: a forked child can deadlock on locks held by the parent's threads (MXNet engine,
        # OpenCV pool) at fork time; spawned workers import only this module's light dependencies.
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            for part in pool.imap(_write_identity, tasks, chunksize=1):
                marks.update(part)
                bar.update(len(part))
    else:
        for task in tasks:
            part = _write_identity(task)
            marks.update(part)
            bar.update(len(part))
    bar.close()
    write_landmarks(os.path.join(out, "landmarks.tsv"), marks)
    return {"identities": spec.identities, "images": len(marks)}
