"""The sub-center cleaning report on constructed data whose answer is known."""
import math

import numpy as np

from gluonface.losses.subcenter import subcenter_report


def test_report_finds_dominant_subcentre_and_far_samples():
    rng = np.random.default_rng(0)
    e, c, k = 8, 3, 3
    weight = rng.normal(size=(c * k, e))
    w = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    xs, ys, far = [], [], []
    dominant = [2, 0, 1]
    for cls in range(c):
        for i in range(6):  # 6 clean samples close to the dominant sub-centre
            xs.append(w[cls * k + dominant[cls]] + 0.05 * rng.normal(size=e))
            ys.append(cls)
            far.append(False)
        other = (dominant[cls] + 1) % k  # 2 noisy samples nearest another sub-centre
        for i in range(2):
            xs.append(w[cls * k + other] + 0.05 * rng.normal(size=e))
            ys.append(cls)
            far.append(None)
    x, y = np.array(xs) * 3.0, np.array(ys)
    rep = subcenter_report(x, y, weight, k, threshold_deg=30.0)
    assert rep.dominant.tolist() == dominant
    assert rep.counts.sum() == len(y) and rep.counts.max(axis=1).tolist() == [6, 6, 6]
    # independent angle computation for every sample
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    angles = [math.degrees(math.acos(np.clip(xn[i] @ w[y[i] * k + dominant[y[i]]], -1, 1)))
              for i in range(len(y))]
    np.testing.assert_allclose(rep.angle, angles, rtol=1e-9)
    assert rep.num_beyond == int((np.array(angles) > 30.0).sum()) == int(rep.beyond.sum())
    clean = np.array([f is False for f in far])
    assert not rep.beyond[clean].any()
