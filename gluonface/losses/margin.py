"""Normalised-softmax margin losses: softmax, ArcFace, CosFace, SphereFace-style, combined, sub-center.

Logits are ``s · cos θ_j`` between the L2-normalised embedding and L2-normalised class centres; the target
column becomes ``s · margin_cos(cos θ_y)``. Logits and the softmax are always computed in float32, so the
losses are stable when the backbone runs in float16/bfloat16 under ``mx.contrib.amp``.
"""
import math

import mxnet as mx
from mxnet import gluon

# Keeps arccos and sqrt(1 − cos²) away from their infinite-gradient points at |cos θ| = 1.
_COS_EPS = 1e-6


def margin_cos(F, cos_target, m1=1.0, m2=0.0, m3=0.0, easy_margin=False):
    """The combined-margin transform of the target cosine: ``cos(m1·θ + m2) − m3`` with ``θ = arccos(cos)``.

    Only the target column is transformed; callers substitute the result into that column.

    * CosFace fast path (``m1 == 1``, ``m2 == 0``): ``cos θ − m3`` exactly (no arccos).
    * ``m1 == 1``: ``cos(θ + m2) = cos θ · cos m2 − sin θ · sin m2`` with ``sin θ = sqrt(1 − cos² θ)``.
      Beyond ``th = cos(π − m2)`` (where ``θ + m2 > π`` and the curve would turn back up) ArcFace's
      fallback ``cos θ − m2 · sin m2`` keeps the target logit decreasing in θ.
    * ``m1 != 1``: through ``arccos``; beyond ``θ = (π − m2) / m1`` the fallback is ``cos θ − (th + 1)``,
      which is continuous with ``cos π = −1`` at the threshold.
    * ``easy_margin``: the margin is applied only where ``cos θ > 0``; elsewhere ``cos θ`` is kept and the
      threshold fallback is not used (ArcFace's ``easy_margin`` option).
    ``m3`` is subtracted in every branch that applies the margin.

    Args:
        F: ``mx.nd`` or ``mx.sym`` (the ``F`` of a ``hybrid_forward``).
        cos_target: cosines of the target class, any shape, float32, values in [−1, 1].
        m1, m2, m3: multiplicative angular, additive angular (radians) and additive cosine margins.
        easy_margin: see above.

    Returns:
        Same shape and dtype as ``cos_target``.
    """
    m1, m2, m3 = float(m1), float(m2), float(m3)
    if m1 == 1.0 and m2 == 0.0:
        target = cos_target - m3
        return F.where(cos_target > 0, target, cos_target) if easy_margin else target
    if m1 == 1.0:
        c = F.clip(cos_target, -1.0, 1.0)
        sin_t = F.sqrt(F.clip(1.0 - c * c, _COS_EPS, 1.0))
        target = c * math.cos(m2) - sin_t * math.sin(m2) - m3
        th, mm = math.cos(math.pi - m2), m2 * math.sin(m2)
    else:
        c = F.clip(cos_target, -1.0 + _COS_EPS, 1.0 - _COS_EPS)
        target = F.cos(F.arccos(c) * m1 + m2) - m3
        theta_th = (math.pi - m2) / m1
        th = math.cos(theta_th) if theta_th < math.pi else -1.0
        mm = th + 1.0
    if easy_margin:
        return F.where(cos_target > 0, target, cos_target)
    return F.where(cos_target > th, target, cos_target - mm - m3)


class MarginSoftmaxLoss(gluon.HybridBlock):
    """Combined-margin softmax cross-entropy with optional sub-centres.

    Parameters: ``weight`` ``(num_classes · sub_centers, E)`` float32, init Normal(0.01); row ``c·K + k`` is
    sub-centre ``k`` of class ``c``. Called as ``loss(embeddings (N, E), labels (N,))`` → ``(N,)`` float32.
    """

    def __init__(self, num_classes, embedding_size, s=64.0, m1=1.0, m2=0.5, m3=0.0,
                 easy_margin=False, sub_centers=1, compute_dtype="float32", **kwargs):
        super().__init__(**kwargs)
        # float32 by default whatever the embedding dtype; float64 only for gradient checks in tests.
        self.compute_dtype = compute_dtype
        self.num_classes, self.sub_centers = int(num_classes), int(sub_centers)
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.easy_margin = bool(easy_margin)
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(self.num_classes * self.sub_centers,
                                                          int(embedding_size)),
                                          init=mx.init.Normal(0.01), dtype="float32")

    def cosine(self, F, embeddings, weight):
        """``(N, E)`` embeddings → ``(N, C)`` float32 cosines (max over sub-centres)."""
        # Explicit float32: under AMP the backbone may hand us bfloat16/float16 embeddings. ``dot`` is a
        # widest-type op for AMP, so with float32 inputs it stays float32 (FullyConnected would be cast down).
        x = F.L2Normalization(F.cast(embeddings, self.compute_dtype), mode="instance")
        w = F.L2Normalization(F.cast(weight, self.compute_dtype), mode="instance")
        cos = F.dot(x, w, transpose_b=True)
        if self.sub_centers > 1:
            cos = F.max(F.reshape(cos, (0, self.num_classes, self.sub_centers)), axis=2)
        return F.clip(cos, -1.0, 1.0)

    def hybrid_forward(self, F, embeddings, labels, weight):
        cos = self.cosine(F, embeddings, weight)
        labels = F.cast(labels, self.compute_dtype)
        target = F.pick(cos, labels, axis=1)
        new_target = margin_cos(F, target, self.m1, self.m2, self.m3, self.easy_margin)
        onehot = F.one_hot(labels, self.num_classes, dtype=self.compute_dtype)
        logits = F.broadcast_add(cos, F.broadcast_mul(onehot, F.expand_dims(new_target - target, 1)))
        logp = F.log_softmax(logits * self.s, axis=1)
        return -F.pick(logp, labels, axis=1)


class SoftmaxLoss(gluon.HybridBlock):
    """Plain softmax cross-entropy on un-normalised embeddings: logits ``x · Wᵀ (+ b)``.

    Parameters: ``weight`` ``(C, E)`` Normal(0.01) and, with ``use_bias``, ``bias`` ``(C,)`` zeros.
    ``loss(embeddings (N, E), labels (N,))`` → ``(N,)`` float32.
    """

    def __init__(self, num_classes, embedding_size, use_bias=True, compute_dtype="float32", **kwargs):
        super().__init__(**kwargs)
        self.compute_dtype = compute_dtype
        self.num_classes, self.use_bias = int(num_classes), bool(use_bias)
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(self.num_classes, int(embedding_size)),
                                          init=mx.init.Normal(0.01), dtype="float32")
            self.bias = (self.params.get("bias", shape=(self.num_classes,), init="zeros", dtype="float32")
                         if self.use_bias else None)

    def hybrid_forward(self, F, embeddings, labels, weight, bias=None):
        logits = F.dot(F.cast(embeddings, self.compute_dtype), F.cast(weight, self.compute_dtype),
                       transpose_b=True)
        if bias is not None:
            logits = F.broadcast_add(logits, F.expand_dims(F.cast(bias, self.compute_dtype), 0))
        logp = F.log_softmax(logits, axis=1)
        return -F.pick(logp, F.cast(labels, self.compute_dtype), axis=1)
