"""Differentiable pieces of Partial FC: margin logits of a shard, feature all-gather, distributed softmax.

Gradient convention (what makes the engine loop generic): every rank calls ``loss.backward()`` on its own
per-sample losses and steps its trainers with its own batch size, exactly as for a data-parallel
backbone whose ``DistributedTrainer`` *averages* over the W ranks. So the class-centre gradient each rank
produces is that of the job's summed loss divided by W (``DistSoftmaxCE.backward``), and the
feature gradient a rank receives is the exact gradient of its own samples' losses
(``AllGatherRows.backward`` undoes the 1/W after summing the shards' contributions).
"""
from mxnet import autograd, nd

from gluonface.losses.margin import margin_cos


def margin_logits(emb, centres, target, s, m1, m2, m3, easy_margin):
    """Scaled cosine logits of ``emb`` against ``centres`` with the margin on each sample's own class.

    Args:
        emb: ``(N, E)`` float32 embeddings (not normalised).
        centres: ``(K, E)`` float32 class centres (not normalised).
        target: ``(N,)`` float32 column of each sample's class in ``centres``, -1 when absent.
        s, m1, m2, m3, easy_margin: the margin of ``gluonface.losses.margin.margin_cos``.
    Returns:
        ``(N, K)`` float32 ``s * cos`` with the target column replaced by ``s * margin_cos(cos_y)``.
    """
    # float32 whatever the backbone's AMP dtype, and clipped like ``MarginSoftmaxLoss`` (rounding can
    # push a cosine past 1, where the margin's arccos is undefined)
    xn = nd.L2Normalization(emb.astype("float32", copy=False), mode="instance")
    wn = nd.L2Normalization(centres, mode="instance")
    cos = nd.clip(nd.dot(xn, wn, transpose_b=True), -1.0, 1.0)
    valid = target >= 0
    column = nd.maximum(target, 0)
    cos_y = nd.pick(cos, column, axis=1)
    # samples whose class lives elsewhere feed 0 to the margin: arccos' infinite slope at |cos| = 1
    # would turn their (zero-weighted) gradient into NaN
    safe = nd.where(valid, cos_y, nd.zeros_like(cos_y))
    shift = (margin_cos(nd, safe, m1, m2, m3, easy_margin) - safe) * valid
    onehot = nd.one_hot(column, depth=centres.shape[0])
    return s * (cos + onehot * shift.expand_dims(axis=1))


class AllGatherRows(autograd.Function):
    """``(n, E)`` local rows -> ``(N, E)`` rows of all ranks; backward: sum over ranks, keep own rows, x W."""

    def __init__(self, comm, name):
        super().__init__()
        self._comm = comm
        self._name = name
        self.span = None   # (first, last + 1) row of this rank's samples in the gathered batch

    def forward(self, rows):
        sizes = self._comm.allgather(nd.array([rows.shape[0]], dtype="int64"), self._name + ".n")
        sizes = [int(v) for v in sizes.asnumpy()]
        start = sum(sizes[:self._comm.rank])
        self.span = (start, start + rows.shape[0])
        return self._comm.allgather(rows, self._name)

    def backward(self, grad):
        total = self._comm.allreduce(grad, self._name + ".grad")
        begin, end = self.span
        return nd.slice_axis(total, axis=0, begin=begin, end=end) * self._comm.size


class DistSoftmaxCE(autograd.Function):
    """Cross-entropy of the softmax over the logits of *all* shards; each rank holds ``(N, K_r)``.

    forward(logits ``(N, K)`` float32, target ``(N,)`` float32 local column or -1) -> ``(N,)`` float32
    per-sample loss, identical on every rank. Two allreduces: the row max (stability) and, stacked,
    the exp-sum and the target logit.
    """

    def __init__(self, comm, name):
        super().__init__()
        self._comm = comm
        self._name = name

    def forward(self, logits, target):
        comm = self._comm
        row_max = comm.allreduce(nd.max(logits, axis=1), self._name + ".max", op="max")
        shifted = nd.broadcast_sub(logits, row_max.expand_dims(axis=1))
        exp = nd.exp(shifted)
        valid = target >= 0
        mine = nd.pick(shifted, nd.maximum(target, 0), axis=1) * valid
        sums = comm.allreduce(nd.stack(nd.sum(exp, axis=1), mine), self._name + ".sum")
        prob = nd.broadcast_div(exp, sums[0].expand_dims(axis=1))
        self.save_for_backward(prob, target)
        return nd.log(sums[0]) - sums[1]

    def backward(self, grad):
        prob, target = self.saved_tensors
        # each rank seeds only its own samples; the shard needs every sample's seed
        seed = self._comm.allreduce(grad, self._name + ".seed")
        onehot = nd.one_hot(nd.maximum(target, 0), depth=prob.shape[1]) * (target >= 0).expand_dims(axis=1)
        dlogits = (prob - onehot) * (seed / self._comm.size).expand_dims(axis=1)
        return dlogits, nd.zeros_like(target)

