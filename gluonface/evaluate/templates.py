"""Template-based 1:1 verification in the IJB-B/C style from generic metadata files.

Files (whitespace-separated, ``#`` comments):
- metadata: ``image_path template_id media_id`` per image (insightface's ``*_face_tid_mid.txt`` layout);
  paths are relative to an image root and the images are aligned faces of the model's input size.
- pairs: ``template_a template_b label`` (label 1 = same subject, 0 = different).

Template feature (insightface's IJB protocol): flip-TTA image embeddings, L2-normalised per image (or kept
unnormalised with ``image_norm=False``, letting the norm act as a quality weight), averaged within each
media (the frames of one video count once), summed over the template's media, L2-normalised. Pair score =
cosine similarity. TAR is reported at FAR 1e-6 ... 1e-1 where the impostor count resolves it.
"""
import numpy as np

from gluonface.errors import GluonFaceError
from gluonface.evaluate import roc
from gluonface.evaluate.images import read_table

TEMPLATE_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _ints(rows, col, path, what):
    try:
        return np.array([int(r[col]) for r in rows], dtype=np.int64)
    except ValueError as exc:
        raise GluonFaceError(f"{path}: {what} must be integers ({exc}); fix: number templates/media/labels") \
            from None


def load_template_meta(path):
    """Read a metadata file -> (paths list[str] (N,), template ids (N,) int64, media ids (N,) int64)."""
    rows = read_table(path, 3, "template metadata")
    return [r[0] for r in rows], _ints(rows, 1, path, "template ids"), _ints(rows, 2, path, "media ids")


def load_template_pairs(path):
    """Read a template pair list -> (a (P,) int64, b (P,) int64, same (P,) bool)."""
    rows = read_table(path, 3, "template pair list")
    labels = _ints(rows, 2, path, "labels")
    if not np.isin(labels, (0, 1)).all():
        raise GluonFaceError(f"{path}: labels must be 0 or 1; fix: 1 = same subject, 0 = different")
    return _ints(rows, 0, path, "template ids"), _ints(rows, 1, path, "template ids"), labels.astype(bool)


def template_features(features, templates, medias, image_norm=True):
    """Pool image features into template features.

    Args:
        features: (N, E) float image embeddings (flip-summed; normalised or not).
        templates: (N,) int template id per image; medias: (N,) int media id per image.
        image_norm: L2-normalise each image feature before pooling.

    Returns:
        (template ids (T,) int64 sorted, template features (T, E) float32 L2-normalised).
    """
    f = np.asarray(features, dtype=np.float64)
    templates, medias = np.asarray(templates), np.asarray(medias)
    if not (len(f) == len(templates) == len(medias)):
        raise GluonFaceError(f"{len(f)} features for {len(templates)} template ids and {len(medias)} media ids; "
                             "fix: one metadata line per image")
    if image_norm:
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    # Media means: group by (template, media); np.unique + np.add.at keeps it vectorised for 500k images.
    keys = np.stack([templates, medias], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.ravel()
    media_sum = np.zeros((len(uniq), f.shape[1]))
    np.add.at(media_sum, inv, f)
    media_mean = media_sum / np.bincount(inv, minlength=len(uniq))[:, None]
    tids, tinv = np.unique(uniq[:, 0], return_inverse=True)
    tfeat = np.zeros((len(tids), f.shape[1]))
    np.add.at(tfeat, tinv.ravel(), media_mean)
    tfeat /= np.maximum(np.linalg.norm(tfeat, axis=1, keepdims=True), 1e-12)
    return tids.astype(np.int64), tfeat.astype(np.float32)


def template_scores(template_ids, template_feats, a, b):
    """Cosine similarity of template pairs (P,) float64; unknown template ids raise GluonFaceError."""
    template_ids = np.asarray(template_ids)
    pos_a = np.searchsorted(template_ids, a)
    pos_b = np.searchsorted(template_ids, b)
    for ids, pos in ((a, pos_a), (b, pos_b)):
        pos = np.minimum(pos, len(template_ids) - 1)
        bad = template_ids[pos] != ids
        if bad.any():
            raise GluonFaceError(f"pair list names template {int(np.asarray(ids)[bad][0])}, which has no image "
                                 "in the metadata; fix: use the metadata and pair files of the same protocol")
    fe = np.asarray(template_feats, dtype=np.float64)
    return np.sum(fe[pos_a] * fe[pos_b], axis=1)


def template_metrics(scores, same, fars=TEMPLATE_FARS):
    """TAR@FAR (``{far: tar}``), AUC, pair counts and the ROC of template pair scores."""
    scores, same = roc.check_scores(scores, same)
    return {
        "tar_at_far": {f: v["tar"] for f, v in roc.tar_at_far(scores, same, fars).items()},
        "auc": roc.auc(scores, same),
        "num_pairs": int(scores.size),
        "num_genuine": int(same.sum()),
        "num_impostor": int((~same).sum()),
        "roc": roc.roc_curve(scores, same),
    }


def evaluate_templates(net, meta_path, pairs_path, image_root, input_size=(112, 112), batch_size=64, ctx=None,
                       flip=True, image_norm=True, progress=False):
    """Embed every image of the metadata file, build templates and score the pair list.

    Args:
        net: as in ``gluonface.evaluate.verification.embed_images``.
        image_root: directory the metadata paths are relative to.

    Returns:
        ``template_metrics`` dict plus ``num_images`` and ``num_templates``.
    """
    from gluonface.evaluate.images import iter_image_chunks
    from gluonface.evaluate.verification import embed_raw, gluon_forward
    import mxnet as mx
    paths, tids, mids = load_template_meta(meta_path)
    a, b, same = load_template_pairs(pairs_path)
    forward = gluon_forward(net, ctx) if isinstance(net, mx.gluon.Block) else net
    feats = embed_raw(forward, iter_image_chunks(paths, image_root, input_size), batch_size, flip, progress)
    ids, tfeat = template_features(feats, tids, mids, image_norm=image_norm)
    out = template_metrics(template_scores(ids, tfeat, a, b), same)
    out.update(num_images=len(paths), num_templates=int(len(ids)))
    return out
