"""Independent NumPy reference for Partial FC tests: the full margin softmax of ONE process.

Written from the formulas (insightface's combined margin with the ArcFace θ+m>π fallback), not from the
MXNet code under test. Shapes: X (N, E) embeddings, W (C, E) centres, y (N,) int labels.
"""
import numpy as np

EPS = 1e-10   # L2Normalization(mode='instance') adds it under the square root


def margin_target(c, m1, m2, m3, easy_margin=False):
    """Modified target cosine and its derivative d/dc, elementwise over c (N,) float64."""
    c = np.clip(c, -1.0, 1.0)
    theta = np.arccos(c)
    sin = np.sqrt(np.maximum(1.0 - c * c, 1e-12))
    value = np.cos(m1 * theta + m2) - m3
    slope = np.sin(m1 * theta + m2) * m1 / sin
    if m1 == 1.0 and m2 > 0.0:
        # ArcFace: where θ + m2 would pass π, continue with the line c - sin(π - m2)·m2 (monotone in θ);
        # easy margin instead keeps c wherever c <= 0
        if easy_margin:
            keep, line = c <= 0.0, c
        else:
            keep, line = c <= np.cos(np.pi - m2), c - np.sin(np.pi - m2) * m2 - m3
        value = np.where(keep, line, value)
        slope = np.where(keep, 1.0, slope)
    return value, slope


def _normalise(a):
    r = np.sqrt((a * a).sum(axis=1, keepdims=True) + EPS)
    return a / r, r


def _normalise_grad(a, r, g):
    """Gradient through a / sqrt(|a|^2 + eps) given the output gradient g."""
    return g / r - a * (a * g).sum(axis=1, keepdims=True) / r ** 3


def loss_and_grads(X, W, y, s, m1, m2, m3, easy_margin=False):
    """Per-sample loss (N,) and the gradients of their SUM w.r.t. X (N, E) and W (C, E), float64."""
    X, W = X.astype(np.float64), W.astype(np.float64)
    xn, rx = _normalise(X)
    wn, rw = _normalise(W)
    cos = xn @ wn.T
    n = np.arange(len(y))
    target, slope = margin_target(cos[n, y], m1, m2, m3, easy_margin)
    z = s * cos
    z[n, y] = s * target
    z_max = z.max(axis=1, keepdims=True)
    e = np.exp(z - z_max)
    p = e / e.sum(axis=1, keepdims=True)
    loss = np.log(e.sum(axis=1)) + z_max[:, 0] - z[n, y]
    dz = p.copy()
    dz[n, y] -= 1.0
    dcos = s * dz
    dcos[n, y] *= slope
    dX = _normalise_grad(X, rx, dcos @ wn)
    dW = _normalise_grad(W, rw, dcos.T @ xn)
    return loss, dX, dW


def sgd_step(w, g, mom, lr, momentum, wd):
    """MXNet's SGD with momentum: mom = momentum·mom − lr·(g + wd·w); w += mom (g already rescaled)."""
    mom[:] = momentum * mom - lr * (g + wd * w)
    w += mom


def train_reference(X_in, labels, A, W, steps, s, m1, m2, m3, lr, momentum, wd):
    """Train backbone ``emb = x @ A.T`` and centres W on the full global batches, mean loss.

    Args:
        X_in: (steps, N, D) inputs; labels: (steps, N) int; A: (E, D); W: (C, E).
    Returns:
        (A, W, losses (steps, N)) after ``steps`` SGD steps.
    """
    A, W = A.astype(np.float64).copy(), W.astype(np.float64).copy()
    mom_a, mom_w = np.zeros_like(A), np.zeros_like(W)
    losses = []
    for t in range(steps):
        x = X_in[t].astype(np.float64)
        emb = x @ A.T
        loss, d_emb, dW = loss_and_grads(emb, W, labels[t], s, m1, m2, m3)
        n = len(labels[t])
        dA = d_emb.T @ x
        sgd_step(A, dA / n, mom_a, lr, momentum, wd)
        sgd_step(W, dW / n, mom_w, lr, momentum, wd)
        losses.append(loss)
    return A, W, np.array(losses)
