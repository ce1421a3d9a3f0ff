"""BatchNorm + per-channel PReLU as one native op, or MXNet's BatchNorm then PReLU, chosen at trace time.

``ConvBNSequence`` is the container ``gluonface.models.layers.conv_bn`` returns: Conv → BatchNorm →
(ChannelPReLU), the same children and therefore the same parameter names as a plain ``HybridSequential``
(checkpoints and exports are unchanged). In executed graphs it runs BatchNorm + PReLU as
``_gluonface_bn_prelu``: one read for the batch statistics and one read + write for normalise-and-activate
in the forward pass, two reads and one write in the backward pass, and one oneDNN reorder of its input
instead of one per op (see gluonface/ops/__init__.py).

Training vs inference: MXNet's extension API gives a kernel no ``is_train`` flag, yet BatchNorm must use
batch statistics while training and the moving ones otherwise, in the same cached graph. The graph derives
the flag from ``Dropout(ones(1), p=0.5)``: exactly 1 in inference, 0 or 2 in training (Dropout draws one
random number per call from MXNet's generator, the one Dropout layers and initialisers share: random
streams after a training call differ from the fallback's, deterministically; exact resume is unaffected
because gluonface.engine.rng re-seeds MXNet at every checkpoint). Moving statistics are updated in the training forward pass (MXNet's oneDNN
BatchNorm updates them in the backward pass; a training forward without backward updates here and not there).
"""
import numpy as np
from mxnet.gluon import nn

from gluonface.ops.library import native_active
from gluonface.ops.tracing import traced_for_execution


def use_native_bn_prelu(F, bn, act):
    """Whether BatchNorm ``bn`` followed by ChannelPReLU ``act`` can run as the native op in this trace."""
    if not isinstance(bn, nn.BatchNorm) or not hasattr(act, "alpha"):  # act: a ChannelPReLU
        return False
    if not native_active("bn_prelu") or not traced_for_execution(F):
        return False
    from mxnet.contrib.amp import amp
    if getattr(amp, "_amp_initialized", False):
        return False
    kw = bn._kwargs
    if kw.get("axis", 1) != 1 or kw.get("fix_gamma") or kw.get("use_global_stats"):
        return False
    import mxnet as mx
    params = [bn.gamma, bn.beta, bn.running_mean, bn.running_var, act.alpha]
    for p in params:
        if np.dtype(p.dtype) != np.float32 or p.grad_req == "add":
            return False
        # Imperative calls finish deferred parameters themselves (_finish_deferred); symbolic traces infer
        # their shapes through the op. Uninitialised ones wait for MXNet's layers to raise the usual error.
        if F is mx.nd and p._data is None and not p._deferred_init:
            return False
    try:
        return all(c.device_type == "cpu" for c in act.alpha.list_ctx())
    except RuntimeError:  # not initialised at all: decided again at the next trace
        return False


def bn_prelu(F, x, bn, act):
    """``(N, C, H, W)`` float32 → PReLU(BatchNorm(x)); updates ``bn``'s running statistics in training."""
    import mxnet as mx
    params = [bn.gamma, bn.beta, bn.running_mean, bn.running_var, act.alpha]
    if F is mx.nd:
        ctx = x.context
        _finish_deferred(params, x.shape[1])
        args = [p.data(ctx) for p in params]
        ones = mx.nd.ones((1,), ctx=ctx)
    else:
        args = [p.var() for p in params]
        ones = F.ones((1,))
    mode = F.Dropout(ones, p=0.5)  # 1 in inference, 0 or 2 in training
    kw = bn._kwargs
    out = F._internal._gluonface_bn_prelu(x, *args, mode, eps=kw["eps"], momentum=kw["momentum"])
    return out[0]


def _finish_deferred(params, channels):
    """Give deferred (shape-less) BatchNorm/PReLU parameters their per-channel shape and initialise them, as
    ``nn.BatchNorm`` does on its first imperative call, so that call already runs the fused op."""
    for p in params:
        if p._data is None and p._deferred_init:
            p.shape = tuple(channels if d == 0 else d for d in p.shape)
            p._finish_deferred_init()


class ConvBNSequence(nn.HybridSequential):
    """Conv → BatchNorm → optional ChannelPReLU; BatchNorm + PReLU fused natively where possible."""

    def hybrid_forward(self, F, x, *args):
        children = list(self._children.values())
        if len(children) == 3 and use_native_bn_prelu(F, children[1], children[2]):
            return bn_prelu(F, children[0](x), children[1], children[2])
        for block in children:
            x = block(x)
        return x
