"""Image lists (.lst, both layouts), identity-folder scanning and the landmarks file."""
import numpy as np
import pytest

from gluonface.data.landmarks import read_landmarks, write_landmarks
from gluonface.data.lst import read_lst, scan_folder
from gluonface.errors import GluonFaceError


def test_im2rec_and_face2rec2_lists(tmp_path):
    (tmp_path / "a.lst").write_text("0\t3.000000\tx/a 1.jpg\n1\t1.000000\ty/b.jpg\n2\t3.000000\tx/c.jpg\n")
    ids = read_lst(str(tmp_path / "a.lst"))
    assert [i.name for i in ids] == ["1", "3"]
    assert [s for _, s in ids[1].items] == ["x/a 1.jpg", "x/c.jpg"]
    assert ids[1].items[0][0] == str(tmp_path / "x/a 1.jpg")
    (tmp_path / "b.lst").write_text("1\t/abs/p.jpg\t7\t1\t2\n0\trel.png\t2\n")
    ids = read_lst(str(tmp_path / "b.lst"))
    assert [(i.name, [s for _, s in i.items]) for i in ids] == [("2", ["rel.png"]), ("7", ["/abs/p.jpg"])]
    (tmp_path / "c.lst").write_text("just a path.jpg\n")
    with pytest.raises(GluonFaceError, match=r"c\.lst:1: cannot parse .*im2rec.*face2rec2"):
        read_lst(str(tmp_path / "c.lst"))


def test_scan_folder_sorts_and_reports_non_images(tmp_path):
    for rel in ["b/2.jpg", "b/1.PNG", "a/x/3.jpg", "a/notes.txt", "landmarks.tsv"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "c").mkdir()
    ids, others = scan_folder(str(tmp_path))
    assert [(i.name, [s for _, s in i.items]) for i in ids] == [
        ("a", ["a/x/3.jpg"]), ("b", ["b/1.PNG", "b/2.jpg"]), ("c", [])]
    assert others == [("a/notes.txt", "not an image file name (skipped by extension)")]
    with pytest.raises(GluonFaceError, match="no identity sub-folders"):
        scan_folder(str(tmp_path / "c"))


def test_landmarks_round_trip_and_errors(tmp_path):
    pts = {"b/ü 1.jpg": np.arange(10).reshape(5, 2) + 0.25, "a/0.jpg": np.ones((5, 2))}
    write_landmarks(str(tmp_path / "l.tsv"), pts)
    text = (tmp_path / "l.tsv").read_text(encoding="utf-8").splitlines()
    assert text[0] == "path\tx1\ty1\tx2\ty2\tx3\ty3\tx4\ty4\tx5\ty5" and text[1].startswith("a/0.jpg\t")
    back = read_landmarks(str(tmp_path / "l.tsv"))
    assert set(back) == set(pts)
    np.testing.assert_allclose(back["b/ü 1.jpg"], pts["b/ü 1.jpg"], atol=1e-3)
    (tmp_path / "bad.tsv").write_text(text[0] + "\nx.jpg\t1\t2\n")
    with pytest.raises(GluonFaceError, match=r"bad\.tsv:2: expected a path and 10 numbers"):
        read_landmarks(str(tmp_path / "bad.tsv"))
    with pytest.raises(GluonFaceError, match="no landmarks file"):
        read_landmarks(str(tmp_path / "none.tsv"))
