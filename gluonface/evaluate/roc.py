"""Score-level verification statistics: ROC curve, AUC, TAR at fixed FAR and the best accuracy threshold.

Scores are similarities (higher = more likely the same identity); ``labels`` are booleans (True = same).
Every function here is pure NumPy so the pair-level and template-level protocols share one definition.
"""
import numpy as np

from gluonface.errors import GluonFaceError


def check_scores(scores, labels, need_both=True):
    """Validate and convert a score/label pair.

    Args:
        scores: (P,) similarities, any float dtype.
        labels: (P,) booleans or 0/1 integers.
        need_both: require at least one genuine and one impostor pair.

    Returns:
        (scores (P,) float64, labels (P,) bool).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.size == 0:
        raise GluonFaceError("the pair set is empty; fix: use a pair file with at least one genuine and "
                             "one impostor pair")
    if labels.shape != scores.shape:
        raise GluonFaceError(f"{scores.size} scores but {labels.size} labels; fix: give one same/different "
                             "label per pair")
    if not np.isfinite(scores).all():
        raise GluonFaceError("some similarity scores are NaN or infinite; fix: check the model's embeddings "
                             "(a diverged checkpoint produces NaN)")
    labels = labels.astype(bool)
    if need_both and (labels.all() or not labels.any()):
        raise GluonFaceError(f"the pair set has {int(labels.sum())} genuine and {int((~labels).sum())} "
                             "impostor pairs; fix: verification needs both kinds")
    return scores, labels


def roc_curve(scores, labels):
    """ROC of the rule "same if score >= t" over every distinct score t (descending).

    Returns:
        dict with ``fpr``, ``tpr`` (K+1,) float64 starting at (0, 0) and ``thresholds`` (K+1,) float64
        (the first is +inf: nothing accepted).
    """
    scores, labels = check_scores(scores, labels)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # The last index of each run of equal scores: the ROC only moves between distinct thresholds.
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return {"fpr": fpr, "tpr": tpr, "thresholds": np.r_[np.inf, s[last]]}


def auc(scores, labels):
    """Area under the ROC: P(genuine score > impostor score) + 0.5 P(equal) (Mann-Whitney U)."""
    from scipy.stats import rankdata
    scores, labels = check_scores(scores, labels)
    ranks = rankdata(scores)  # average ranks give ties exactly half credit
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def tar_at_far(scores, labels, fars):
    """True accept rate at each false accept rate the impostor count can resolve.

    For a target ``far`` with N impostors, ``k = floor(far * N)`` impostors may be accepted; the threshold
    is the (k+1)-th highest impostor score and a pair is accepted when its score is strictly above it. This
    is the highest TAR any threshold reaches with FAR <= far. Targets with ``k < 1`` are left out: N
    impostors cannot measure a FAR below 1/N.

    Returns:
        dict ``{far: {"tar": float, "threshold": float, "far": float (achieved)}}``.
    """
    scores, labels = check_scores(scores, labels)
    neg = np.sort(scores[~labels])[::-1]
    pos = scores[labels]
    out = {}
    for far in fars:
        k = int(np.floor(far * neg.size + 1e-9))
        if k < 1:
            continue
        t = neg[k] if k < neg.size else -np.inf
        out[far] = {"tar": float(np.mean(pos > t)), "threshold": float(t),
                    "far": float(np.mean(neg > t))}
    return out


def threshold_candidates(scores):
    """Thresholds worth trying for "same if score > t": below all, between neighbours, at the top.

    Returns:
        (K,) float64 ascending.
    """
    u = np.unique(scores)
    return np.r_[u[0] - 1.0, (u[:-1] + u[1:]) / 2.0, u[-1]]


def accuracy_at(scores, labels, thresholds):
    """Accuracy of "same if score > t" for each t in ``thresholds`` ((K,) -> (K,) float64)."""
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])
    pos_above = pos.size - np.searchsorted(pos, thresholds, side="right")
    neg_at_or_below = np.searchsorted(neg, thresholds, side="right")
    return (pos_above + neg_at_or_below) / float(scores.size)


def best_threshold(scores, labels):
    """The threshold with the highest accuracy on these pairs (ties: the lowest threshold).

    Returns:
        (threshold float, accuracy float).
    """
    cand = threshold_candidates(scores)
    acc = accuracy_at(scores, labels, cand)
    i = int(np.argmax(acc))
    return float(cand[i]), float(acc[i])
