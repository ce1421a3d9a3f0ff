"""``gluonface embed``: aligned image files -> an ``.npy`` of L2-normalised embeddings (+ the path list)."""
import os

import numpy as np

from gluonface.errors import GluonFaceError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def collect_images(inputs):
    """Expand files and directories (recursively, sorted) into a list of image paths."""
    paths = []
    for item in inputs:
        item = str(item)
        if os.path.isdir(item):
            found = sorted(os.path.join(d, f) for d, _, files in os.walk(item) for f in files
                           if f.lower().endswith(IMAGE_EXTS))
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise GluonFaceError(f"{item} does not exist; fix: pass aligned image files or directories")
    if not paths:
        raise GluonFaceError(f"no images found in {list(map(str, inputs))}; fix: pass aligned .jpg/.png faces")
    return paths


def embed_files(inputs, model, out, batch_size=64, flip=True, ctx=None, progress=False, backend="auto"):
    """Embed aligned face images and save them.

    Args:
        inputs: image files and/or directories.
        model: exported PREFIX (symbol or INT8) or ``.onnx`` (``FaceEmbedder.from_path``).
        backend: ``auto``, ``mxnet`` or ``onnxruntime`` (``FaceEmbedder.from_path``).
        out: ``.npy`` path; ``(N, E) float32`` L2-normalised rows in the order of ``OUT.txt``, which lists the
            image paths one per line.

    Returns:
        (out path, number of images, embedding width).
    """
    from gluonface.evaluate.images import iter_image_chunks
    from gluonface.evaluate.verification import embed_raw, l2_normalize
    from gluonface.export.embedder import FaceEmbedder
    if not str(out).endswith(".npy"):
        raise GluonFaceError(f"--out {out} must end with .npy; fix: e.g. --out embeddings.npy")
    paths = collect_images(inputs)
    emb = FaceEmbedder.from_path(model, ctx=ctx, backend=backend)
    chunks = iter_image_chunks(paths, "", emb.input_size, chunk=batch_size)
    feats = l2_normalize(embed_raw(emb, chunks, batch_size=batch_size, flip=flip, progress=progress))
    os.makedirs(os.path.dirname(os.path.abspath(str(out))), exist_ok=True)
    np.save(str(out), feats)
    with open(str(out)[:-4] + ".txt", "w", encoding="utf-8") as f:
        f.write("".join(p + "\n" for p in paths))
    print(f"wrote {out}: {feats.shape[0]} x {feats.shape[1]} float32 (paths in {str(out)[:-4]}.txt); backend "
          f"{emb.describe_backend()}")
    return str(out), feats.shape[0], feats.shape[1]
