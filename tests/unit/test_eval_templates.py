"""IJB-style template pooling and TAR@FAR against a NumPy reference written with plain loops."""
import numpy as np
import pytest

from gluonface.errors import GluonFaceError
from gluonface.evaluate.templates import (load_template_meta, load_template_pairs, template_features,
                                          template_metrics, template_scores)


def _ref_template(feats, tids, mids, t, image_norm=True):
    rows = [i for i in range(len(tids)) if tids[i] == t]
    media = {}
    for i in rows:
        f = feats[i] / np.linalg.norm(feats[i]) if image_norm else feats[i]
        media.setdefault(mids[i], []).append(f)
    total = sum(np.mean(v, axis=0) for v in media.values())
    return total / np.linalg.norm(total)


@pytest.mark.parametrize("image_norm", [True, False])
def test_template_features_match_loops(image_norm):
    rng = np.random.default_rng(0)
    n = 60
    feats = rng.normal(size=(n, 6)) * rng.uniform(0.5, 3, size=(n, 1))
    tids = rng.integers(0, 9, n) * 7 + 3      # sparse ids
    mids = rng.integers(0, 4, n) + 100 * tids  # media ids are unique across templates in IJB
    ids, tf = template_features(feats, tids, mids, image_norm=image_norm)
    assert list(ids) == sorted(set(tids.tolist()))
    for t, f in zip(ids, tf):
        np.testing.assert_allclose(f, _ref_template(feats, tids, mids, t, image_norm), atol=1e-6)


def test_media_weighting_differs_from_plain_mean():
    # One template: media 1 has three nearly identical frames, media 2 one frame. The media average counts
    # media 1 once, so the template lies halfway between the two directions.
    feats = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float64)
    _, tf = template_features(feats, [5, 5, 5, 5], [1, 1, 1, 2])
    np.testing.assert_allclose(tf[0], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)


def _brute_tar(s, y, far):
    pos, neg = s[y], s[~y]
    best = None
    for t in np.r_[-np.inf, s]:
        if np.mean(neg > t) <= far:
            tar = np.mean(pos > t)
            best = tar if best is None else max(best, tar)
    return best


def test_scores_and_tar_at_far():
    rng = np.random.default_rng(1)
    ids = np.arange(0, 400, 2)
    tf = rng.normal(size=(len(ids), 8))
    tf /= np.linalg.norm(tf, axis=1, keepdims=True)
    a = rng.choice(ids, 1500)
    b = rng.choice(ids, 1500)
    same = rng.random(1500) < 0.3
    b = np.where(same, a, b)
    # Genuine pairs of identical templates would all score 1; perturb scores through a noisy copy instead.
    s = template_scores(ids, tf, a, b)
    np.testing.assert_allclose(s, [tf[x // 2] @ tf[y // 2] for x, y in zip(a, b)], atol=1e-9)
    s = s - same * rng.uniform(0, 1.5, 1500)
    m = template_metrics(s, same)
    n_neg = int((~same).sum())
    expected = [f for f in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1) if np.floor(f * n_neg + 1e-9) >= 1]
    assert sorted(m["tar_at_far"]) == expected == [1e-3, 1e-2, 1e-1]
    for far, tar in m["tar_at_far"].items():
        assert tar == pytest.approx(_brute_tar(s, same, far))
    assert m["num_genuine"] == int(same.sum()) and m["num_impostor"] == n_neg


def test_unknown_template_and_bad_files(tmp_path):
    with pytest.raises(GluonFaceError, match="template 99"):
        template_scores(np.array([1, 2]), np.eye(2), np.array([1]), np.array([99]))
    meta = tmp_path / "meta.txt"
    meta.write_text("# image template media\na.jpg 1 10\nb.jpg 1 11\nc.jpg 2\n")
    with pytest.raises(GluonFaceError, match=r"meta.txt:4 has 2 fields"):
        load_template_meta(str(meta))
    meta.write_text("a.jpg 1 10\nb.jpg x 11\n")
    with pytest.raises(GluonFaceError, match="integers"):
        load_template_meta(str(meta))
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1 2 1\n1 3 2\n")
    with pytest.raises(GluonFaceError, match="0 or 1"):
        load_template_pairs(str(pairs))
    pairs.write_text("\n# nothing\n")
    with pytest.raises(GluonFaceError, match="empty"):
        load_template_pairs(str(pairs))
    meta.write_text("a.jpg 1 10\nb.jpg 2 11\n")
    paths, t, m = load_template_meta(str(meta))
    assert paths == ["a.jpg", "b.jpg"] and t.tolist() == [1, 2] and m.tolist() == [10, 11]
