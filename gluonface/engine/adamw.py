"""AdamW (decoupled weight decay) as an MXNet optimizer, registered as ``'adamw'``.

MXNet 1.9.1 ships the fused ``contrib.adamw_update`` operator but no optimizer class. This one lives in an
importable module so it can be pickled to parameter servers. Per update t of a weight, with schedule lr::

    m = β1·m + (1 − β1)·g;   v = β2·v + (1 − β2)·g²
    w ← w − lr·( c_t · m / (√v + ε) + wd·w ),   c_t = √(1 − β2^t) / (1 − β1^t)   (bias correction)

where g is the gradient after ``rescale_grad`` and optional clipping (the PyTorch AdamW update, except that
ε is added to √v instead of √v̂, as in MXNet's operator).
"""
import math

import mxnet as mx


@mx.optimizer.register
class AdamW(mx.optimizer.Optimizer):
    """AdamW. Args: learning_rate, beta1, beta2, epsilon, plus ``Optimizer`` args (wd, clip_gradient, ...)."""

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def create_state(self, index, weight):
        return (mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype),
                mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype))

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        t = self._index_update_count[index]
        correction = math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        mean, var = state
        kw = {"clip_gradient": self.clip_gradient} if self.clip_gradient is not None else {}
        rescale = mx.nd.full((1,), self.rescale_grad, ctx=weight.context)
        mx.nd.contrib.adamw_update(weight, grad, mean, var, rescale, lr=correction, eta=lr, wd=wd,
                                   beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon, out=weight, **kw)
