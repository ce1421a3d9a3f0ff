"""Closed-set 1:N identification on a gallery / probe split: CMC curve, rank-1 and rank-5 accuracy.

List file (whitespace-separated, ``#`` comments): ``image_path subject_id role`` with role ``gallery`` or
``probe``; paths are relative to an image root and the images are aligned faces. Each gallery subject is
one template: the mean of its L2-normalised image embeddings, normalised. Each probe image is searched
against all gallery subjects by cosine similarity; its rank is 1 + the number of gallery subjects scoring
strictly higher than its own subject. Probes whose subject has no gallery entry cannot be identified in a
closed-set protocol and are counted (``num_unmated_probes``) but left out of the CMC.
"""
import numpy as np

from gluonface.errors import GluonFaceError
from gluonface.evaluate.images import read_table

ROLES = ("gallery", "probe")


def load_identification_list(path):
    """Read a list file -> (paths list[str], subjects (N,) str array, is_gallery (N,) bool)."""
    rows = read_table(path, 3, "identification list")
    roles = np.array([r[2] for r in rows])
    bad = ~np.isin(roles, ROLES)
    if bad.any():
        raise GluonFaceError(f"{path}: role {roles[bad][0]!r} is not 'gallery' or 'probe'; fix: the third column "
                             "says which side an image belongs to")
    return [r[0] for r in rows], np.array([r[1] for r in rows]), roles == "gallery"


def gallery_templates(features, subjects):
    """Mean of normalised features per subject -> (subject names (G,) sorted, (G, E) float64 normalised)."""
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    names, inv = np.unique(np.asarray(subjects), return_inverse=True)
    sums = np.zeros((len(names), f.shape[1]))
    np.add.at(sums, inv.ravel(), f)
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return names, sums


def cmc(gallery_feats, gallery_subjects, probe_feats, probe_subjects, max_rank=20):
    """Cumulative match characteristic of probes against gallery subjects.

    Args:
        gallery_feats: (Ng, E), gallery_subjects: (Ng,) subject names; probe_feats: (Np, E), probe_subjects:
            (Np,).
        max_rank: length of the returned curve (capped at the number of gallery subjects).

    Returns:
        dict: ``cmc`` list (K,) of identification rates at ranks 1..K, ``rank1``, ``rank5`` (None when the
        gallery has fewer than 5 subjects), ``ranks`` (M,) int64 per mated probe, ``num_probes`` (mated),
        ``num_unmated_probes``, ``num_gallery_subjects``.
    """
    names, g = gallery_templates(gallery_feats, gallery_subjects)
    p = np.asarray(probe_feats, dtype=np.float64)
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    probe_subjects = np.asarray(probe_subjects)
    mated = np.isin(probe_subjects, names)
    if not mated.any():
        raise GluonFaceError("no probe subject appears in the gallery; fix: the list needs gallery images for the "
                             "subjects being searched")
    p, truth = p[mated], np.searchsorted(names, probe_subjects[mated])
    ranks = np.empty(len(p), dtype=np.int64)
    for i in range(0, len(p), 4096):  # bounded (chunk, G) similarity blocks
        sim = p[i:i + 4096] @ g.T
        own = sim[np.arange(len(sim)), truth[i:i + 4096]]
        ranks[i:i + 4096] = 1 + np.sum(sim > own[:, None], axis=1)
    k = min(int(max_rank), len(names))
    curve = [float(np.mean(ranks <= r)) for r in range(1, k + 1)]
    return {"cmc": curve, "rank1": curve[0], "rank5": curve[4] if k >= 5 else None, "ranks": ranks,
            "num_probes": int(mated.sum()), "num_unmated_probes": int((~mated).sum()),
            "num_gallery_subjects": int(len(names))}


def evaluate_identification(net, list_path, image_root, input_size=(112, 112), batch_size=64, ctx=None,
                            flip=True, max_rank=20, progress=False):
    """Embed the list's images and compute the CMC (see ``cmc``)."""
    from gluonface.evaluate.images import iter_image_chunks
    from gluonface.evaluate.verification import embed_images
    paths, subjects, is_gallery = load_identification_list(list_path)
    if not is_gallery.any() or is_gallery.all():
        raise GluonFaceError(f"{list_path} has {int(is_gallery.sum())} gallery and {int((~is_gallery).sum())} probe "
                             "images; fix: identification needs both")
    feats = embed_images(net, iter_image_chunks(paths, image_root, input_size), batch_size=batch_size, ctx=ctx,
                         flip=flip, progress=progress)
    return cmc(feats[is_gallery], subjects[is_gallery], feats[~is_gallery], subjects[~is_gallery], max_rank)
