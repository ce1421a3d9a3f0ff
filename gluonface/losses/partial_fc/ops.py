"""Differentiable pieces of Partial FC: shard cosines, feature all-gather, distributed margin softmax.

Gradient convention (what keeps the engine loop generic): every rank calls ``loss.backward()`` on its own
per-sample losses and steps its trainers with its own batch size, exactly as for a data-parallel
backbone whose ``DistributedTrainer`` *averages* over the W ranks. So the class-centre gradient each rank
produces is that of the job's summed loss divided by W (``MarginSoftmaxCE.backward``), and the feature
gradient a rank receives is the exact gradient of its own samples' losses (``AllGatherRows.backward``
undoes the 1/W after summing the shards' contributions).

Memory: at 10^6+ classes the ``(N, K)`` logit-sized arrays dominate a worker, so the margin and the
softmax are one Function that keeps a single ``(N, K)`` array (the probabilities, reused in place for the
gradient) instead of the ~10 an op-by-op autograd graph records.
"""
from mxnet import autograd, nd

from gluonface.losses.margin import margin_cos


def shard_cosine(emb, centres):
    """``(N, E)`` embeddings x ``(K, E)`` centres -> ``(N, K)`` float32 cosines (both L2-normalised)."""
    # float32 whatever the backbone's AMP dtype
    xn = nd.L2Normalization(emb.astype("float32", copy=False), mode="instance")
    wn = nd.L2Normalization(centres, mode="instance")
    return nd.dot(xn, wn, transpose_b=True)


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


class MarginSoftmaxCE(autograd.Function):
    """Margin softmax cross-entropy over the cosines of *all* shards; each rank holds ``(N, K_r)``.

    forward(cos ``(N, K)`` float32, target ``(N,)`` float32 column of the sample's class in this shard or
    -1) -> ``(N,)`` float32 per-sample loss, identical on every rank. The target logit is
    ``s * margin_cos(cos_y)`` (``gluonface.losses.margin``), every other logit ``s * cos``. Collectives:
    the row max (stability), then the exp-sum and target logit stacked in one allreduce; backward one
    more for the seeds of other ranks' samples.
    """

    def __init__(self, comm, name, s, m1, m2, m3, easy_margin):
        super().__init__()
        self._comm = comm
        self._name = name
        self._margin = (float(s), float(m1), float(m2), float(m3), bool(easy_margin))

    def forward(self, cos, target):
        s, m1, m2, m3, easy = self._margin
        comm, n = self._comm, cos.shape[0]
        valid = target >= 0
        where = (nd.arange(n, ctx=cos.context), nd.maximum(target, 0))
        cos_y = nd.pick(cos, where[1], axis=1)
        # samples whose class lives elsewhere feed 0 to the margin (its slope is infinite at |cos| = 1)
        safe = nd.where(valid, cos_y, nd.zeros_like(cos_y))
        with autograd.record():           # the margin's value and slope, from margin_cos itself
            safe.attach_grad()
            new_y = margin_cos(nd, safe, m1, m2, m3, easy)
        new_y.backward()
        logits = cos * s
        logits[where] = s * nd.where(valid, new_y, cos_y)
        row_max = comm.allreduce(nd.max(logits, axis=1), self._name + ".max", op="max")
        nd.broadcast_sub(logits, row_max.expand_dims(axis=1), out=logits)
        mine = nd.pick(logits, where[1], axis=1) * valid
        nd.exp(logits, out=logits)
        sums = comm.allreduce(nd.stack(nd.sum(logits, axis=1), mine), self._name + ".sum")
        nd.broadcast_div(logits, sums[0].expand_dims(axis=1), out=logits)
        self.save_for_backward(logits, target, safe.grad)
        return nd.log(sums[0]) - sums[1]

    def backward(self, grad):
        prob, target, slope = self.saved_tensors
        s = self._margin[0]
        valid = target >= 0
        where = (nd.arange(prob.shape[0], ctx=prob.context), nd.maximum(target, 0))
        # each rank seeds only its own samples; the shard needs every sample's seed
        seed = self._comm.allreduce(grad, self._name + ".seed") * (s / self._comm.size)
        nd.broadcast_mul(prob, seed.expand_dims(axis=1), out=prob)      # s * seed * p, in place
        at_y = nd.pick(prob, where[1], axis=1)
        prob[where] = nd.where(valid, (at_y - seed) * slope, at_y)      # target: s * seed * (p - 1) * slope
        return prob, nd.zeros_like(target)
