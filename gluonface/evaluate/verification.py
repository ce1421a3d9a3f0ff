"""Pair verification (LFW-style ``.bin`` sets): flip-TTA embeddings, 10-fold accuracy, TAR@FAR, AUC.

Protocol (insightface's, with an exact threshold search instead of a 0.01 grid): the embedding of an image
is the sum of the embeddings of the image and its horizontal mirror, L2-normalised; pair score is the
cosine similarity; pairs are split into ``nfolds`` contiguous folds in file order; for each fold the
threshold with the best accuracy on the other folds is applied to it. Thresholds are cosine similarities
(a pair is "same" when its cosine is above the threshold).
"""
import numpy as np

from gluonface.errors import GluonFaceError
from gluonface.evaluate import roc

PAIR_FARS = (1e-1, 1e-2, 1e-3, 1e-4)


def _check_batch(batch, what="images"):
    if not isinstance(batch, np.ndarray):
        batch = np.asarray(batch)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise GluonFaceError(f"{what} have shape {batch.shape}; expected (N, H, W, 3) RGB (channels last); "
                             "fix: pass aligned HWC RGB images, e.g. x.transpose(0, 2, 3, 1) for NCHW input")
    if batch.dtype != np.uint8:
        raise GluonFaceError(f"{what} have dtype {batch.dtype}; expected uint8 pixels 0..255; fix: convert "
                             "with np.clip(x, 0, 255).astype(np.uint8) (do not normalise: the network does)")
    return batch


def channels_first(batch, dtype=np.float32):
    """uint8 (N, H, W, 3) -> contiguous (N, 3, H, W) of ``dtype``. OpenCV's vectorised channel split writes each
    image's planes in place, then one contiguous cast: NumPy's strided transpose of a 3-wide last axis took
    0.69-0.80 ms for 64 faces of 112x112 to uint8 and 1.2-1.9 ms to float32, against 0.16-0.35 and 0.6-1.1 ms
    this way (the slow form was a fifth of a small network's batch-64 forward)."""
    import cv2
    planes = np.empty((batch.shape[0], batch.shape[3]) + batch.shape[1:3], np.uint8)
    for i, image in enumerate(batch):
        cv2.split(np.ascontiguousarray(image), list(planes[i]))
    return planes if np.dtype(dtype) == np.uint8 else planes.astype(dtype)


def mirror(planes):
    """Horizontal mirror of contiguous (N, C, H, W) uint8 planes: one OpenCV flip of the (N*C*H, W) rows (0.18 ms
    for 64 faces, against 1.0 ms for NumPy's reversed copy in uint8 and 4.3 ms in float32)."""
    import cv2
    out = np.empty_like(planes)
    cv2.flip(planes.reshape(-1, planes.shape[-1]), 1, out.reshape(-1, planes.shape[-1]))
    return out


def iter_batches(images, batch_size):
    """Yield uint8 (b, H, W, 3) batches of at most ``batch_size`` from an array or an iterable of chunks."""
    if batch_size < 1:
        raise GluonFaceError(f"batch_size is {batch_size}; fix: use a positive batch size")
    if isinstance(images, np.ndarray):
        images = _check_batch(images)
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
        return
    pending, size = [], 0
    for chunk in images:
        chunk = _check_batch(chunk)
        pending.append(chunk)
        size += len(chunk)
        while size >= batch_size:
            joined = np.concatenate(pending)
            yield joined[:batch_size]
            pending, size = [joined[batch_size:]], len(joined) - batch_size
    if size:
        yield np.concatenate(pending)


def gluon_forward(net, ctx=None):
    """Wrap a Gluon block as ``f(x (B, 3, H, W) float32 numpy) -> (B, E) float32 numpy``.

    Args:
        net: a (hybridized or not) Block whose parameters already live on ``ctx``.
        ctx: an ``mx.Context`` or a list; batches are split across the list. Default: the contexts the
            parameters live on.
    """
    import mxnet as mx
    if ctx is None:
        params = list(net.collect_params().values())
        ctx = params[0].list_ctx() if params else [mx.cpu()]
    ctxs = list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]

    def forward(x):
        parts = [p for p in np.array_split(x, len(ctxs)) if len(p)]
        # Launch every device before reading any result back, so the devices run concurrently.
        outs = [net(mx.nd.array(p, ctx=c, dtype="float32")) for p, c in zip(parts, ctxs)]
        return np.concatenate([o.asnumpy() for o in outs]).astype(np.float32, copy=False)
    return forward


def embed_raw(forward, images, batch_size=64, flip=True, progress=False):
    """Un-normalised embeddings: ``forward(x) (+ forward(mirror x))`` per image.

    Args:
        forward: ``f(x (B, 3, H, W) float32 raw RGB 0..255) -> (B, E)``; one whose ``input_dtype`` is uint8
            gets the pixels as uint8, one whose ``takes_nhwc`` is true gets ``forward.forward_nhwc(batch)``
            with the uint8 (B, H, W, 3) batches as they are.
        images: uint8 (N, H, W, 3) RGB, or an iterable of such chunks.

    Returns:
        (N, E) float32.
    """
    total = len(images) if hasattr(images, "__len__") else None
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="img", desc="embedding", leave=False)
    # A forward that takes uint8 pixels (an INT8 graph, ``bound_forward``) gets them without a float32 copy.
    dtype = np.uint8 if getattr(forward, "input_dtype", None) == np.uint8 else np.float32
    # A forward that takes (B, H, W, 3) uint8 batches as they come (gluonface's INT8 runner) gets them so.
    nhwc = getattr(forward, "forward_nhwc", None) if getattr(forward, "takes_nhwc", False) else None
    out = []
    for batch in iter_batches(images, batch_size):
        if nhwc is not None:
            e = np.asarray(nhwc(batch), dtype=np.float32)
            if flip:
                e = e + np.asarray(nhwc(np.ascontiguousarray(batch[:, :, ::-1])), dtype=np.float32)
            out.append(e)
            if bar is not None:
                bar.update(len(batch))
            continue
        planes = channels_first(batch, np.uint8)   # layout changes and the mirror in uint8, one cast per forward
        e = np.asarray(forward(planes.astype(dtype, copy=False)), dtype=np.float32)
        if flip:
            e = e + np.asarray(forward(mirror(planes).astype(dtype, copy=False)), dtype=np.float32)
        out.append(e)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    if not out:
        raise GluonFaceError("no images to embed; fix: pass at least one image")
    return np.concatenate(out)


def row_cosines(a, b):
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (float64) -> (N,)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def l2_normalize(x):
    """Row-wise L2 normalisation of an (N, E) array (zero rows stay zero) -> float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_images(net, images, batch_size=64, ctx=None, flip=True, progress=False):
    """L2-normalised embeddings of aligned face images.

    Args:
        net: a Gluon Block mapping (B, 3, H, W) float32 raw RGB pixels to (B, E) embeddings (it
            normalises in-graph), or any callable doing the same on NumPy arrays (e.g. a FaceEmbedder
            backend).
        images: uint8 (N, H, W, 3) RGB, or an iterable of such chunks for sets too large for memory.
        batch_size: images per forward pass.
        ctx: ``mx.Context`` or a list of them (batches split across the list); Gluon blocks only.
        flip: add the embedding of the horizontally mirrored image before normalising.

    Returns:
        (N, E) float32, L2-normalised rows.
    """
    import mxnet as mx
    forward = gluon_forward(net, ctx) if isinstance(net, mx.gluon.Block) else net
    return l2_normalize(embed_raw(forward, images, batch_size, flip, progress))


def pair_scores(embeddings):
    """Cosine similarity of rows (0, 1), (2, 3), ...: (2P, E) -> (P,) float64."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    if len(e) % 2:
        raise GluonFaceError(f"{len(e)} embeddings for a pair set; expected an even number (a0, b0, a1, "
                             "b1, ...); fix: the pair file lost an image, rebuild it with `gluonface pairs`")
    return np.sum(e[0::2] * e[1::2], axis=1)


def verification_metrics(embeddings, issame, nfolds=10, fars=PAIR_FARS):
    """K-fold verification accuracy and ROC statistics of a pair set.

    Args:
        embeddings: (2P, E) float, pairs interleaved (a0, b0, a1, b1, ...); normalised here.
        issame: (P,) bool.
        nfolds: contiguous folds in pair order (sklearn ``KFold(shuffle=False)`` sizes).
        fars: target false accept rates for ``tar_at_far``.

    Returns:
        dict: ``accuracy`` (mean held-out fold accuracy), ``accuracy_std``, ``fold_accuracy`` (nfolds,)
        and ``fold_threshold`` (nfolds,) lists, ``threshold`` (best cosine threshold on all pairs) and
        ``best_accuracy`` (its accuracy on all pairs, optimistic), ``tar_at_far`` ``{far: tar}`` (only
        FARs the impostor count resolves), ``auc``, ``num_pairs``, ``roc`` ``{"fpr", "tpr",
        "thresholds"}`` float64 arrays for plotting.
    """
    scores = pair_scores(embeddings)
    scores, labels = roc.check_scores(scores, issame)
    if nfolds < 2 or scores.size < nfolds:
        raise GluonFaceError(f"{scores.size} pairs cannot be split into {nfolds} folds; fix: use a pair set "
                             f"with at least {max(nfolds, 2)} pairs or lower nfolds (>= 2)")
    folds = np.array_split(np.arange(scores.size), nfolds)
    fold_acc, fold_thr = [], []
    for test in folds:
        train = np.setdiff1d(np.arange(scores.size), test)
        if labels[train].all() or not labels[train].any():
            raise GluonFaceError("a training fold holds only one kind of pair; fix: interleave genuine and "
                                 "impostor pairs in the pair file (insightface files alternate blocks)")
        thr, _ = roc.best_threshold(scores[train], labels[train])
        fold_thr.append(thr)
        fold_acc.append(float(roc.accuracy_at(scores[test], labels[test], np.array([thr]))[0]))
    thr_all, acc_all = roc.best_threshold(scores, labels)
    return {
        "accuracy": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
        "fold_accuracy": fold_acc,
        "fold_threshold": fold_thr,
        "threshold": thr_all,
        "best_accuracy": acc_all,
        "tar_at_far": {f: v["tar"] for f, v in roc.tar_at_far(scores, labels, fars).items()},
        "auc": roc.auc(scores, labels),
        "num_pairs": int(scores.size),
        "roc": roc.roc_curve(scores, labels),
    }


def verify_bin(net, bin_path, batch_size=64, ctx=None, image_size=(112, 112), nfolds=10, flip=True,
               progress=False):
    """Embed an insightface ``.bin`` pair set and score it (see ``verification_metrics``).

    Args:
        net: as in ``embed_images``.
        bin_path: path of the ``.bin`` file (pickled encoded images + issame list).
        image_size: (H, W) the images are decoded to.

    Returns:
        the ``verification_metrics`` dict.
    """
    from gluonface.data.pairs import decode_bin
    images, issame = decode_bin(str(bin_path), tuple(image_size))
    issame = np.asarray(issame, dtype=bool)
    if len(issame) == 0:
        raise GluonFaceError(f"the pair set {bin_path} is empty; fix: build one with pairs, e.g. `gluonface "
                             "pairs SRC OUT.bin`")
    if len(images) != 2 * len(issame):
        raise GluonFaceError(f"{bin_path} holds {len(images)} images for {len(issame)} pairs; expected "
                             f"{2 * len(issame)}; fix: rebuild the pair file with `gluonface pairs`")
    emb = embed_images(net, images, batch_size=batch_size, ctx=ctx, flip=flip, progress=progress)
    return verification_metrics(emb, issame, nfolds=nfolds)
