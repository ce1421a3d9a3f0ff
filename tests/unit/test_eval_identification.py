"""1:N identification (CMC) against a NumPy reference written with plain loops."""
import numpy as np
import pytest

from gluonface.errors import GluonFaceError
from gluonface.evaluate.identification import cmc, load_identification_list


def _ref_ranks(gf, gs, pf, ps):
    subjects = sorted(set(gs))
    temps = {}
    for s in subjects:
        rows = [gf[i] / np.linalg.norm(gf[i]) for i in range(len(gs)) if gs[i] == s]
        m = np.sum(rows, axis=0)
        temps[s] = m / np.linalg.norm(m)
    ranks = []
    for f, s in zip(pf, ps):
        if s not in temps:
            continue
        f = f / np.linalg.norm(f)
        own = float(f @ temps[s])
        ranks.append(1 + sum(float(f @ temps[o]) > own for o in subjects))
    return np.array(ranks)


def test_cmc_matches_loops():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 10))
    gs = np.repeat([f"s{i}" for i in range(12)], 2)
    gf = centres[np.repeat(np.arange(12), 2)] + 0.8 * rng.normal(size=(24, 10))
    pid = rng.integers(0, 14, 80)            # subjects 12, 13 have no gallery entry
    ps = np.array([f"s{i}" for i in pid])
    pf = np.where((pid < 12)[:, None], centres[np.minimum(pid, 11)], 0) + 1.2 * rng.normal(size=(80, 10))
    out = cmc(gf, gs, pf, ps, max_rank=20)
    ranks = _ref_ranks(gf, gs, pf, ps)
    assert out["num_probes"] == len(ranks) and out["num_unmated_probes"] == int((pid >= 12).sum())
    np.testing.assert_array_equal(out["ranks"], ranks)
    assert len(out["cmc"]) == 12  # capped at the number of gallery subjects
    for r in range(1, 13):
        assert out["cmc"][r - 1] == pytest.approx(np.mean(ranks <= r))
    assert out["rank1"] == pytest.approx(np.mean(ranks == 1))
    assert out["rank5"] == pytest.approx(np.mean(ranks <= 5))
    assert 0.2 < out["rank1"] < 1.0 and out["cmc"][-1] == 1.0


def test_small_gallery_and_errors(tmp_path):
    out = cmc(np.eye(3), ["a", "b", "c"], np.eye(3)[[0, 2]], ["a", "c"])
    assert out["rank1"] == 1.0 and out["rank5"] is None and len(out["cmc"]) == 3
    with pytest.raises(GluonFaceError, match="no probe subject"):
        cmc(np.eye(2), ["a", "b"], np.eye(2), ["x", "y"])
    lst = tmp_path / "id.txt"
    lst.write_text("a.jpg s1 gallery\nb.jpg s1 query\n")
    with pytest.raises(GluonFaceError, match="'query'"):
        load_identification_list(str(lst))
