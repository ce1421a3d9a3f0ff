"""Batch-hard triplet loss on L2-normalised embeddings and the P×K identity sampler that feeds it."""
import numpy as np
from mxnet import gluon

from gluonface.errors import GluonFaceError


class BatchHardTripletLoss(gluon.HybridBlock):
    """For each anchor: ``relu(max_pos d(a, p) − min_neg d(a, n) + margin)`` within the batch.

    ``d`` is the Euclidean distance between L2-normalised embeddings (``sqrt(2 − 2 cos)``), float32.
    The anchor itself is not a positive; an anchor without positives in the batch uses ``d_ap = 0``.
    Needs at least two identities per batch (use ``PKSampler``). No parameters.
    ``loss(embeddings (N, E), labels (N,))`` → ``(N,)`` float32.
    """

    def __init__(self, margin=0.3, compute_dtype="float32", **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.compute_dtype = compute_dtype  # float64 only for gradient checks

    def hybrid_forward(self, F, embeddings, labels):
        x = F.L2Normalization(F.cast(embeddings, self.compute_dtype), mode="instance")
        sq = 2.0 - 2.0 * F.dot(x, x, transpose_b=True)
        # The clip keeps sqrt's gradient finite at d = 0 (the diagonal); clip passes no gradient below 1e-12.
        dist = F.sqrt(F.clip(sq, 1e-12, 4.0))
        lab = F.cast(labels, self.compute_dtype)
        same = F.broadcast_equal(F.expand_dims(lab, 1), F.expand_dims(lab, 0))
        eye = F.broadcast_equal(F.expand_dims(F.contrib.arange_like(lab), 1),
                                F.expand_dims(F.contrib.arange_like(lab), 0))
        pos = same - eye
        hardest_pos = F.max(dist * pos, axis=1)
        # Distances are <= 2, so adding 4 to same-identity entries removes them from the minimum.
        hardest_neg = F.min(dist + 4.0 * same, axis=1)
        return F.relu(hardest_pos - hardest_neg + self.margin)


class PKSampler(gluon.data.Sampler):
    """Batches of P identities × K samples each, as lists of dataset positions.

    Identities are drawn without replacement per epoch; an identity with fewer than K samples is sampled
    with replacement. The order is a pure function of ``(seed, epoch)``; call ``set_epoch`` each epoch.

    Args:
        labels: ``(N,)`` integer identity labels in dataset order.
        p: identities per batch (>= 2).
        k: samples per identity (>= 2 so that positives exist).
        seed: base random seed.
    """

    def __init__(self, labels, p, k, seed=0):
        labels = np.asarray(labels).astype(np.int64).ravel()
        if p < 2 or k < 2:
            raise GluonFaceError(f"PKSampler needs p >= 2 and k >= 2, got p={p}, k={k}; fix: e.g. p=16, k=4")
        self._ids, inverse = np.unique(labels, return_inverse=True)
        if len(self._ids) < p:
            raise GluonFaceError(f"PKSampler: only {len(self._ids)} identities for p={p}; fix: lower p")
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(self._ids) + 1))
        self._members = [order[bounds[i]:bounds[i + 1]] for i in range(len(self._ids))]
        self.p, self.k, self.seed, self.epoch = int(p), int(k), int(seed), 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self._members) // self.p

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        ids = rng.permutation(len(self._members))
        for b in range(len(self)):
            batch = []
            for i in ids[b * self.p:(b + 1) * self.p]:
                members = self._members[i]
                pick = rng.choice(members, self.k, replace=len(members) < self.k)
                batch.extend(int(j) for j in pick)
            yield batch
