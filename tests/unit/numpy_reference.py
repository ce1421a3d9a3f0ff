"""An independent NumPy reference (the test oracle) for layers and losses, written from the formulas.

Nothing here imports MXNet or gluonface. Arrays are float64. Layouts follow MXNet: images NCHW, conv
weights (Cout, Cin/groups, kh, kw), dense weights (out, in).
"""
import math

import numpy as np


def conv2d(x, w, b=None, stride=1, pad=0, groups=1):
    """Direct convolution (cross-correlation). x (N, C, H, W), w (O, C/groups, kh, kw) → (N, O, Ho, Wo)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, ho, wo))
    og = o // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]   # (N, cg, Ho, Wo)
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def max_pool2d(x, kernel, stride, pad=0):
    """Max pooling with -inf padding. x (N, C, H, W) → (N, C, Ho, Wo)."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    h, w = x.shape[2:]
    ho, wo = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    out = np.full(x.shape[:2] + (ho, wo), -np.inf)
    for i in range(kernel):
        for j in range(kernel):
            out = np.maximum(out, xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride])
    return out


def avg_pool2d(x, kernel):
    """Non-overlapping average pooling (stride = kernel, no padding)."""
    n, c, h, w = x.shape
    ho, wo = h // kernel, w // kernel
    return x[:, :, :ho * kernel, :wo * kernel].reshape(n, c, ho, kernel, wo, kernel).mean(axis=(3, 5))


def dense(x, w, b=None):
    """x (N, ...) flattened to (N, in); w (out, in) → (N, out)."""
    y = x.reshape(len(x), -1) @ w.T
    return y if b is None else y + b


def prelu(x, alpha):
    """Per-channel PReLU on axis 1; alpha (C,) (any shape with C elements)."""
    a = np.asarray(alpha).reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x > 0, x, a * x)


def batchnorm_inference(x, gamma, beta, mean, var, eps):
    """BatchNorm with running statistics on axis 1."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) \
        + beta.reshape(shape)


def l2_normalize(x):
    return x / np.sqrt((x * x).sum(axis=1, keepdims=True) + 1e-10)


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def margin_target(cos_t, m1, m2, m3, easy_margin=False):
    """Scalar-by-scalar combined margin on the target cosine, written with explicit angles."""
    out = np.empty_like(cos_t)
    for i, c in enumerate(np.clip(cos_t, -1.0, 1.0).ravel()):
        theta = math.acos(min(max(c, -1.0 + 1e-6), 1.0 - 1e-6)) if m1 != 1.0 else math.acos(c)
        with_margin = math.cos(m1 * theta + m2) - m3
        if easy_margin:
            out.flat[i] = with_margin if c > 0 else c
        elif m1 * theta + m2 <= math.pi:
            out.flat[i] = with_margin
        elif m1 == 1.0:
            out.flat[i] = c - m2 * math.sin(m2) - m3          # ArcFace's cos θ − m·sin m fallback
        else:
            out.flat[i] = c - (math.cos((math.pi - m2) / m1) + 1.0) - m3   # continuous at the threshold
    return out


def margin_softmax_loss(x, labels, weight, s, m1, m2, m3, easy_margin=False, sub_centers=1):
    """Per-sample combined-margin softmax cross-entropy. x (N, E), weight (C·K, E) → (N,)."""
    cos = l2_normalize(x) @ l2_normalize(weight).T
    if sub_centers > 1:
        cos = cos.reshape(len(x), -1, sub_centers).max(axis=2)
    cos = np.clip(cos, -1.0, 1.0)
    rows = np.arange(len(x))
    logits = cos.copy()
    logits[rows, labels] = margin_target(cos[rows, labels], m1, m2, m3, easy_margin)
    return -log_softmax(s * logits)[rows, labels]


def softmax_loss(x, labels, weight, bias=None):
    logits = x @ weight.T + (0 if bias is None else bias)
    return -log_softmax(logits)[np.arange(len(x)), labels]


def triplet_batch_hard_bruteforce(x, labels, margin):
    """For each anchor, loop over every (positive, negative) pair and take the hardest of each."""
    e = l2_normalize(x)
    n = len(e)
    out = np.zeros(n)
    for a in range(n):
        d_pos = [np.linalg.norm(e[a] - e[p]) for p in range(n) if p != a and labels[p] == labels[a]]
        d_neg = [np.linalg.norm(e[a] - e[q]) for q in range(n) if labels[q] != labels[a]]
        out[a] = max(0.0, (max(d_pos) if d_pos else 0.0) - min(d_neg) + margin)
    return out


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar function ``f`` at ``x`` (float64 array)."""
    g = np.zeros_like(x)
    for i in range(x.size):
        old = x.flat[i]
        x.flat[i] = old + eps
        hi = f(x)
        x.flat[i] = old - eps
        lo = f(x)
        x.flat[i] = old
        g.flat[i] = (hi - lo) / (2 * eps)
    return g
