"""Per-channel PReLU: the fused native kernel or the pure-MXNet formulation, chosen at trace time.

Both compute ``y = max(x, 0) + alpha_c · min(x, 0)`` on ``(N, C, ...)`` float32 with ``alpha`` of shape
``(C, 1, 1, 1)``, and the same gradients (``dx = dy`` where ``x > 0``, ``alpha_c · dy`` elsewhere;
``dalpha_c = Σ min(x, 0) · dy``). The MXNet formulation is ``x + conv1x1_depthwise(min(x, 0), alpha − 1)``:
MXNet 1.9.1's ``LeakyReLU(act_type='prelu')`` reduces the slope gradient with a generic kernel ~20× slower.
"""
import numpy as np

from gluonface.ops.library import native_active
from gluonface.ops.tracing import traced_for_execution


def use_native_prelu(F, alpha_param):
    """Whether this trace of a PReLU with parameter ``alpha_param`` can use the native kernel.

    Not when: the library is inactive; the graph is traced for export; the slopes are not float32 or AMP is
    on (the kernel is float32 only); the slopes live off the CPU (CPU kernels only); or the slope gradient must be added into
    (``grad_req='add'``): the extension API hands the kernel no write/add request
    (see gluonface/ops/__init__.py), so it always overwrites.
    """
    if not native_active("prelu") or not traced_for_execution(F):  # False once AMP is on
        return False
    from mxnet.contrib.amp import amp
    if getattr(amp, "_amp_initialized", False):  # library loaded before amp.init: AMP may feed bfloat16
        return False
    if np.dtype(alpha_param.dtype) != np.float32 or alpha_param.grad_req == "add":
        return False
    try:
        ctxs = alpha_param.list_ctx()
    except RuntimeError:  # not initialised yet: decided again at the next trace
        return False
    return all(c.device_type == "cpu" for c in ctxs)


def channel_prelu(F, x, alpha, channels, native):
    """``(N, C, ...)`` float32 → same shape; ``alpha`` ``(C, 1, 1, 1)``; ``native`` from use_native_prelu."""
    if native:
        return F._internal._gluonface_prelu(x, alpha)
    neg = F.Convolution(F.minimum(x, 0.0), alpha - 1.0, kernel=(1, 1), num_filter=channels,
                        num_group=channels, no_bias=True)
    return x + neg
