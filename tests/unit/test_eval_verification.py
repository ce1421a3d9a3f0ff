"""Pair verification metrics and flip-TTA embedding against independent NumPy computations."""
import mxnet as mx
import numpy as np
import pytest

from gluonface.errors import GluonFaceError
from gluonface.evaluate import roc
from gluonface.evaluate.verification import channels_first, embed_images, embed_raw, mirror, verification_metrics


def _brute_accuracy(s, y, t):
    return np.mean((s > t) == y)


def _brute_best(s, y):
    """Best threshold by trying every midpoint with a direct comparison; ties -> lowest threshold."""
    u = sorted(set(s.tolist()))
    cands = [u[0] - 1.0] + [(a + b) / 2 for a, b in zip(u[:-1], u[1:])] + [u[-1]]
    best_t, best_a = None, -1.0
    for t in cands:
        a = _brute_accuracy(s, y, t)
        if a > best_a:
            best_t, best_a = t, a
    return best_t, best_a


def _brute_tar(s, y, far):
    pos, neg = s[y], s[~y]
    if np.floor(far * neg.size + 1e-9) < 1:
        return None
    best = 0.0
    for t in np.r_[-np.inf, s]:
        if np.mean(neg > t) <= far:
            best = max(best, np.mean(pos > t))
    return best


def _brute_auc(s, y):
    pos, neg = s[y], s[~y]
    return np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])


def _pairs(rng, n_pairs, dim=8, noise=0.9):
    """Embeddings whose genuine pairs share a direction; labels alternate in blocks like LFW."""
    base = rng.normal(size=(n_pairs, dim))
    same = (np.arange(n_pairs) // 5) % 2 == 0
    b = np.where(same[:, None], base + noise * rng.normal(size=base.shape), rng.normal(size=base.shape))
    emb = np.empty((2 * n_pairs, dim), np.float32)
    emb[0::2], emb[1::2] = base, b
    return emb, same


def test_metrics_match_bruteforce():
    rng = np.random.default_rng(0)
    emb, same = _pairs(rng, 230)
    m = verification_metrics(emb, same, nfolds=10)

    e = emb.astype(np.float64) / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    s = np.array([float(np.dot(e[2 * i], e[2 * i + 1])) for i in range(len(same))])
    # sklearn KFold(10, shuffle=False) sizes: the first n % 10 folds get one extra pair.
    sizes = [len(same) // 10 + (1 if k < len(same) % 10 else 0) for k in range(10)]
    start, accs = 0, []
    for size in sizes:
        test = np.zeros(len(same), bool)
        test[start:start + size] = True
        start += size
        t, _ = _brute_best(s[~test], same[~test])
        accs.append(_brute_accuracy(s[test], same[test], t))
    assert m["accuracy"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert m["accuracy_std"] == pytest.approx(np.std(accs), abs=1e-12)
    t_all, a_all = _brute_best(s, same)
    assert m["threshold"] == pytest.approx(t_all, abs=1e-9)
    assert m["best_accuracy"] == pytest.approx(a_all)
    assert m["auc"] == pytest.approx(_brute_auc(s, same), abs=1e-12)
    # 115 impostors resolve FAR 1e-1 and 1e-2 only.
    assert sorted(m["tar_at_far"]) == [1e-2, 1e-1]
    for far, tar in m["tar_at_far"].items():
        assert tar == pytest.approx(_brute_tar(s, same, far), abs=1e-12)
    # Sanity on the data itself: the problem is neither trivial nor hopeless.
    assert 0.6 < m["accuracy"] < 0.99


def test_roc_curve_matches_bruteforce_with_ties():
    s = np.array([0.1, 0.5, 0.5, 0.9, 0.3, 0.5, 0.2, 0.7])
    y = np.array([0, 1, 0, 1, 0, 1, 0, 0], bool)
    r = roc.roc_curve(s, y)
    for t, fpr, tpr in zip(r["thresholds"][1:], r["fpr"][1:], r["tpr"][1:]):
        assert tpr == pytest.approx(np.mean(s[y] >= t))
        assert fpr == pytest.approx(np.mean(s[~y] >= t))
    assert r["fpr"][-1] == 1.0 and r["tpr"][-1] == 1.0
    assert roc.auc(s, y) == pytest.approx(_brute_auc(s, y))
    assert np.trapz(r["tpr"], r["fpr"]) == pytest.approx(_brute_auc(s, y))


def test_perfect_separation():
    rng = np.random.default_rng(1)
    emb, same = _pairs(rng, 40, noise=0.01)
    m = verification_metrics(emb, same, nfolds=4)
    assert m["accuracy"] == 1.0 and m["auc"] == 1.0 and m["tar_at_far"][1e-1] == 1.0


class _Linear(mx.gluon.HybridBlock):
    def __init__(self, dim):
        super().__init__()
        self.fc = mx.gluon.nn.Dense(dim, in_units=3 * 4 * 6)

    def hybrid_forward(self, F, x):
        return self.fc(x)


def test_embed_images_flip_tta_matches_numpy():
    rng = np.random.default_rng(2)
    net = _Linear(5)
    net.initialize(mx.init.Normal(0.1))
    net.hybridize()
    imgs = rng.integers(0, 256, size=(7, 4, 6, 3), dtype=np.uint8)
    w = net.fc.weight.data().asnumpy().astype(np.float64)
    b = net.fc.bias.data().asnumpy().astype(np.float64)
    x = imgs.astype(np.float64).transpose(0, 3, 1, 2)
    ref = x.reshape(7, -1) @ w.T + b + x[..., ::-1].reshape(7, -1) @ w.T + b
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = embed_images(net, imgs, batch_size=3)
    assert got.dtype == np.float32 and got.shape == (7, 5)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # Chunked input and a list of contexts give the same result.
    chunks = iter([imgs[:2], imgs[2:7]])
    np.testing.assert_allclose(embed_images(net, chunks, batch_size=4, ctx=[mx.cpu(0), mx.cpu(0)]), got,
                               atol=1e-6)
    noflip = x.reshape(7, -1) @ w.T + b
    noflip /= np.linalg.norm(noflip, axis=1, keepdims=True)
    np.testing.assert_allclose(embed_images(net, imgs, flip=False), noflip, atol=1e-5)


def test_layout_helpers_and_uint8_forwards_match_numpy():
    """embed_raw's OpenCV layout change and mirror give NumPy's transpose and reversed copy exactly, and a forward
    that declares ``input_dtype`` uint8 (an INT8 model) gets uint8 planes, the rest float32."""
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, size=(9, 5, 7, 3), dtype=np.uint8)
    strided = imgs[::2]                                   # a non-contiguous batch
    for batch in (imgs, strided):
        want = batch.transpose(0, 3, 1, 2)
        for dtype in (np.uint8, np.float32):
            got = channels_first(batch, dtype)
            assert got.dtype == dtype and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want.astype(dtype))
        np.testing.assert_array_equal(mirror(channels_first(batch, np.uint8)), want[..., ::-1])
    seen = []

    def forward(x):
        seen.append(x.copy())
        return x.reshape(len(x), -1)[:, :4].astype(np.float32)
    for dtype in (np.uint8, np.float32):
        forward.input_dtype = np.dtype(dtype)
        seen.clear()
        embed_raw(forward, imgs, batch_size=4, flip=True)
        assert [x.dtype for x in seen] == [np.dtype(dtype)] * 6
        np.testing.assert_array_equal(seen[0], imgs[:4].transpose(0, 3, 1, 2).astype(dtype))
        np.testing.assert_array_equal(seen[1], imgs[:4].transpose(0, 3, 1, 2)[..., ::-1].astype(dtype))


@pytest.mark.parametrize("bad, words", [
    (np.zeros((2, 3, 4, 6), np.uint8), "(N, H, W, 3)"),
    (np.zeros((2, 4, 6, 3), np.float32), "uint8"),
])
def test_embed_images_rejects_bad_images(bad, words):
    net = _Linear(5)
    net.initialize()
    with pytest.raises(GluonFaceError, match=words.replace("(", r"\(").replace(")", r"\)")):
        embed_images(net, bad)


def test_bad_pair_sets():
    emb = np.ones((6, 4), np.float32)
    with pytest.raises(GluonFaceError, match="empty"):
        verification_metrics(np.zeros((0, 4), np.float32), np.zeros(0, bool))
    with pytest.raises(GluonFaceError, match="even number"):
        verification_metrics(emb[:5], np.array([True, False]))
    with pytest.raises(GluonFaceError, match="both kinds"):
        verification_metrics(emb, np.array([True, True, True]), nfolds=2)
    with pytest.raises(GluonFaceError, match="folds"):
        verification_metrics(emb, np.array([True, False, True]), nfolds=10)
