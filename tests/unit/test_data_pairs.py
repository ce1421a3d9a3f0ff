"""Pair sets: round trip, Python 2 pickles, refusal of code-carrying pickles, pair sampling."""
import os
import pickle

import cv2
import numpy as np
import pytest

from gluonface.data.pairs import decode_bin, load_bin, sample_pairs, save_bin
from gluonface.errors import GluonFaceError


def _jpeg(value, size=(112, 112)):
    return cv2.imencode(".jpg", np.full(size + (3,), value, np.uint8))[1].tobytes()


def test_round_trip_and_decode(tmp_path):
    bins = [_jpeg(10), _jpeg(200), _jpeg(50, (60, 50)), _jpeg(90)]
    save_bin(str(tmp_path / "p.bin"), bins, [True, False])
    loaded, issame = load_bin(str(tmp_path / "p.bin"))
    assert loaded == bins and issame.dtype == bool and issame.tolist() == [True, False]
    images, flags = decode_bin(str(tmp_path / "p.bin"), (112, 112))
    assert images.shape == (4, 112, 112, 3) and images.dtype == np.uint8
    assert abs(int(images[1].mean()) - 200) <= 2 and abs(int(images[2].mean()) - 50) <= 2


def test_python2_pickle_loads(tmp_path):
    """Bytes as Python 2's cPickle.dump((bins, issame), f, 2) writes them: SHORT_BINSTRING / BINSTRING
    opcodes (py2 str), NEWTRUE/NEWFALSE, memo puts; built by hand here."""
    a, b = _jpeg(30), _jpeg(60)

    def py2_str(data):
        if len(data) < 256:
            return b"U" + bytes([len(data)]) + data
        return b"T" + len(data).to_bytes(4, "little") + data
    blob = (b"\x80\x02" + b"]q\x00(" + py2_str(a) + b"q\x01" + py2_str(b) + b"q\x02e"
            + b"]q\x03\x88a" + b"\x86q\x04.")
    (tmp_path / "py2.bin").write_bytes(blob)
    bins, issame = load_bin(str(tmp_path / "py2.bin"))
    assert bins == [a, b] and issame.tolist() == [True]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_carrying_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    with open(path, "wb") as f:
        pickle.dump(([_jpeg(1), _Evil(marker)], [True]), f, protocol=4)
    with pytest.raises(GluonFaceError, match=r"evil\.bin is not a safe \.bin pair set: refusing to load "
                                             r"(posix|os|nt)\.system"):
        load_bin(str(path))
    assert not marker.exists()


def test_python3_protocol2_and_numpy_bool_flags_load(tmp_path):
    with open(tmp_path / "p2.bin", "wb") as f:
        pickle.dump(([_jpeg(5), _jpeg(6)], [np.bool_(False)]), f, protocol=2)
    bins, issame = load_bin(str(tmp_path / "p2.bin"))
    assert bins == [_jpeg(5), _jpeg(6)] and issame.tolist() == [False]


def test_malformed_pair_sets(tmp_path):
    (tmp_path / "z.bin").write_bytes(b"")
    with pytest.raises(GluonFaceError, match=r"z\.bin is not a \.bin pair set"):
        load_bin(str(tmp_path / "z.bin"))
    with open(tmp_path / "odd.bin", "wb") as f:
        pickle.dump(([_jpeg(1)] * 3, [True]), f)
    with pytest.raises(GluonFaceError, match="3 images for 1 pairs"):
        load_bin(str(tmp_path / "odd.bin"))
    save_bin(str(tmp_path / "bad.bin"), [b"xx", _jpeg(1)], [False])
    with pytest.raises(GluonFaceError, match=r"image 0 \(pair 0\) does not decode"):
        decode_bin(str(tmp_path / "bad.bin"))


def test_sample_pairs_balanced_distinct_and_seeded():
    groups = np.repeat(np.arange(12), 4)
    pairs, issame = sample_pairs(groups, 60, seed=3)
    assert pairs.shape == (60, 2) and issame.sum() == 30
    assert (groups[pairs[:, 0]] == groups[pairs[:, 1]]).tolist() == issame.tolist()
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 60
    assert (pairs[:, 0] != pairs[:, 1]).all()
    again, _ = sample_pairs(groups, 60, seed=3)
    np.testing.assert_array_equal(pairs, again)
    assert not np.array_equal(pairs, sample_pairs(groups, 60, seed=4)[0])
    assert issame[:30].sum() not in (0, 30)  # shuffled, so k-fold splits see both kinds
    with pytest.raises(GluonFaceError, match="possible positives"):
        sample_pairs(np.arange(10), 10, seed=0)
