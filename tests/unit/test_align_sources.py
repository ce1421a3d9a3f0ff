"""Job sources (.lst layouts, folder walks) and image reading for gluonface align."""
import cv2
import numpy as np
import pytest

from gluonface.align.image import UnreadableImage, decode_rgb, read_rgb, to_rgb
from gluonface.align.sources import lst_jobs, parse_lst_line, tree_jobs, walk_images
from gluonface.errors import GluonFaceError


def test_face2rec2_line_with_bbox_and_points():
    xs, ys = [10, 30, 20, 12, 28], [40, 41, 50, 60, 61]
    line = "\t".join(["0", "a/b.jpg", "3", "1", "2", "50", "80"] + [str(v) for v in xs + ys])
    path, bbox, points = parse_lst_line(line, 1, "x.lst")
    assert path == "a/b.jpg" and bbox == (1.0, 2.0, 50.0, 80.0)
    np.testing.assert_allclose(points, np.stack([xs, ys], axis=1))  # x1..x5 then y1..y5


def test_other_layouts_and_errors():
    assert parse_lst_line("0\ta/b.jpg\t3", 1, "x.lst") == ("a/b.jpg", None, None)
    assert parse_lst_line("7\t3.000000\tc/d.png", 1, "x.lst") == ("c/d.png", None, None)  # im2rec
    with pytest.raises(GluonFaceError, match="x.lst:4"):
        parse_lst_line("0\ta.jpg\t1\t1\t2\t3", 4, "x.lst")  # 3 numbers: neither bbox nor bbox+points
    with pytest.raises(GluonFaceError, match="at least 3"):
        parse_lst_line("a.jpg", 1, "x.lst")


def test_lst_paths_relative_to_src_and_deduplicated(tmp_path):
    lst = tmp_path / "l.lst"
    lst.write_text(f"0\tp/1.jpg\t0\n0\tp/1.jpg\t1\n0\t{tmp_path}/root/q/2.jpg\t2\n0\t/elsewhere/3.jpg\t3\n")
    jobs = lst_jobs(str(lst), str(tmp_path / "root"))
    assert [j.rel for j in jobs] == ["p/1.jpg", "q/2.jpg", "elsewhere/3.jpg"]
    assert jobs[0].src == str(tmp_path / "root" / "p" / "1.jpg")


def test_walk_and_tree_jobs(tmp_path):
    for rel in ("b/2.PNG", "a/1.jpg", "a/notes.txt", "landmarks.tsv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert walk_images(str(tmp_path)) == ["a/1.jpg", "b/2.PNG"]
    jobs = tree_jobs(str(tmp_path), {"a/1.jpg": np.arange(10.0).reshape(5, 2)})
    assert jobs[0].points[4] == (8.0, 9.0) and jobs[1].points is None
    with pytest.raises(GluonFaceError, match="not a directory"):
        tree_jobs(str(tmp_path / "a" / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GluonFaceError, match="no images"):
        tree_jobs(str(tmp_path / "empty"))


def test_image_conversions(tmp_path):
    gray16 = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    rgb = read_rgb(str(tmp_path / "g16.png"))
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[:, :, 0], (gray16 // 257).astype(np.uint8))
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 200, 10, 0
    ok, buf = cv2.imencode(".png", bgra)
    assert decode_rgb(buf.tobytes())[0, 0].tolist() == [10, 0, 200]  # BGRA -> RGB, alpha dropped
    assert to_rgb(np.ones((3, 3, 1), np.uint8)).shape == (3, 3, 3)
    with pytest.raises(UnreadableImage, match="empty"):
        decode_rgb(b"")
    with pytest.raises(UnreadableImage, match="cannot open"):
        read_rgb(str(tmp_path / "nope.jpg"))


def test_choose_face_rules():
    from gluonface.align.mtcnn import Face
    from gluonface.align.pipeline import choose_face

    def face(x1, y1, x2, y2):
        return Face(np.array([x1, y1, x2, y2], np.float32), 0.9, np.zeros((5, 2), np.float32))
    faces = [face(0, 0, 100, 100), face(180, 130, 220, 170), face(300, 0, 350, 50)]
    shape = (300, 400, 3)  # centre (200, 150)
    assert choose_face(faces, shape, "largest") == 0
    assert choose_face(faces, shape, "central") == 1
    assert choose_face(faces, shape, bbox=(295, 5, 345, 55)) == 2
    assert choose_face(faces, shape, bbox=(0, 250, 10, 260)) == -1  # nothing overlaps the given box
    with pytest.raises(ValueError):
        choose_face(faces, shape, "random")


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = read_rgb(str(tmp_path / "phone.jpg"))
    assert shown.shape == (40, 20, 3)  # displayed upright, as cv2.imread and photo viewers show it
    assert shown[5, 10].mean() > 200 and shown[35, 10].mean() < 50  # white half now on top
