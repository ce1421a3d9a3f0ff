"""`gluonface align` end to end: a tree of real and bad images, worker processes, reports, landmark and
list inputs, and the synthetic raw faces of `gluonface synth --raw`."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data

from gluonface.align.batch import align_tree
from gluonface.align.transform import ARCFACE_112, arcface_template, transform_points
from gluonface.data.landmarks import read_landmarks, write_landmarks
from blob_landmarks import blob_centres, render_blobs


def gluonface(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "gluonface", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def save(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rgb if rgb.ndim == 2 else rgb[:, :, [2, 1, 0, 3][:rgb.shape[2]]]
    assert cv2.imwrite(str(path), img)


def read_report(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "path\tstatus\treason"
    return {line.split("\t")[0]: line.split("\t")[1:] for line in lines[1:]}


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    astro = skimage.data.astronaut()
    face = astro[40:200, 150:300]
    save(root / "id_a" / "astro.jpg", astro)
    save(root / "id_a" / "gray.png", cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY))
    save(root / "id_a" / "rgba.png", np.dstack([astro, np.full(astro.shape[:2], 200, np.uint8)]))
    save(root / "id_b" / "blank.png", np.full((200, 200, 3), 127, np.uint8))
    save(root / "id_b" / "tiny.png", astro[::32, ::32])
    (root / "id_b" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    canvas = np.full((240, 640, 3), 90, np.uint8)
    canvas[40:200, 0:150] = face
    small = cv2.resize(face, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)[:, ::-1]
    canvas[60:60 + small.shape[0], 264:264 + small.shape[1]] = small
    save(root / "id_b" / "two.png", canvas)
    return root


@pytest.mark.slow  # two spawned workers each import MXNet: ~10 s on an idle 2-core machine, more under load
def test_cli_tree_with_workers(photo_tree, tmp_path):
    dst = tmp_path / "aligned"
    proc = gluonface("align", str(photo_tree), str(dst), "--workers", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "aligned 4/7 images" in proc.stdout
    written = sorted(read_landmarks(str(dst / "landmarks.tsv")))
    assert written == ["id_a/astro.jpg", "id_a/gray.png", "id_a/rgba.png", "id_b/two.png"]
    for rel in written:
        crop = cv2.imread(str(dst / rel))
        assert crop.shape == (112, 112, 3)
        np.testing.assert_allclose(read_landmarks(str(dst / "landmarks.tsv"))[rel], ARCFACE_112, atol=1e-3)
    report = read_report(dst / "align_report.tsv")
    assert {k: v[0] for k, v in report.items()} == {
        "id_b/blank.png": "no_face", "id_b/broken.jpg": "unreadable", "id_b/tiny.png": "too_small",
        "id_b/two.png": "multiple"}
    assert "2 faces" in report["id_b/two.png"][1] and "largest" in report["id_b/two.png"][1]
    assert not (dst / "id_b" / "blank.png").exists()
    # worker processes and the in-process path give the same crops
    same = align_tree(str(photo_tree), str(tmp_path / "inproc"), workers=0, progress=False)
    assert same.written == 4
    for rel in written:
        a = cv2.imread(str(dst / rel)).astype(int)
        b = cv2.imread(str(tmp_path / "inproc" / rel)).astype(int)
        assert np.abs(a - b).max() == 0, rel



def test_landmarks_and_lst_inputs(tmp_path):
    rng = np.random.default_rng(0)
    src, truth = tmp_path / "raw", {}
    for i in range(3):
        pose = cv2.getRotationMatrix2D((56, 56), rng.uniform(-30, 30), rng.uniform(1.6, 2.4))
        pose[:, 2] += rng.uniform(40, 90, 2)
        truth[f"p{i}/img.png"] = transform_points(pose, ARCFACE_112)
        save(src / f"p{i}" / "img.png", render_blobs(truth[f"p{i}/img.png"], (330, 340), 3.0))
    listed = {k: v for k, v in truth.items() if k != "p2/img.png"}
    write_landmarks(str(src / "landmarks.tsv"), listed)
    dst = tmp_path / "out"
    summary = align_tree(str(src), str(dst), landmarks=str(src / "landmarks.tsv"), size="112x96",
                         progress=False)
    assert summary.written == 2 and summary.counts["no_landmarks"] == 1
    template = arcface_template("112x96")
    for rel in listed:
        crop = cv2.imread(str(dst / rel))[:, :, ::-1]
        assert crop.shape == (112, 96, 3)
        assert np.linalg.norm(blob_centres(crop, template) - template, axis=1).max() < 0.5
    assert read_report(dst / "align_report.tsv")["p2/img.png"][0] == "no_landmarks"
    # the same points through a face2rec2 .lst (x1..x5 then y1..y5), plus an im2rec line (detector path)
    pts = truth["p2/img.png"]
    lst = tmp_path / "train.lst"
    lst.write_text("\t".join(["0", "p2/img.png", "7", "0", "0", "300", "300"]
                             + [f"{v:.4f}" for v in np.concatenate([pts[:, 0], pts[:, 1]])]) + "\n"
                   + "5\t3.000000\tp0/img.png\n")
    summary = align_tree(str(src), str(tmp_path / "out_lst"), lst=str(lst), progress=False)
    crop = cv2.imread(str(tmp_path / "out_lst" / "p2" / "img.png"))[:, :, ::-1]
    assert np.linalg.norm(blob_centres(crop, ARCFACE_112) - ARCFACE_112, axis=1).max() < 0.5
    report = read_report(tmp_path / "out_lst" / "align_report.tsv")
    assert report == {"p0/img.png": ["no_face", report["p0/img.png"][1]]}  # blobs are not a face


def test_lst_bbox_picks_the_matching_face(photo_tree, tmp_path):
    lst = tmp_path / "two.lst"
    lst.write_text("0\tid_b/two.png\t1\t288\t74\t354\t160\n")  # roughly the smaller, central face
    summary = align_tree(str(photo_tree), str(tmp_path / "o"), lst=str(lst), progress=False)
    assert summary.counts["multiple"] == 1
    reason = read_report(tmp_path / "o" / "align_report.tsv")["id_b/two.png"][1]
    assert "matching the given box" in reason


def test_synth_raw_then_align_from_landmarks(tmp_path):
    raw, dst = tmp_path / "raw", tmp_path / "aligned"
    proc = gluonface("synth", str(raw), "--raw", "--identities", "2", "--images-per-id", "2",
                     "--workers", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = gluonface("align", str(raw), str(dst), "--landmarks", str(raw / "landmarks.tsv"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    truth = read_landmarks(str(raw / "landmarks.tsv"))
    assert sorted(read_landmarks(str(dst / "landmarks.tsv"))) == sorted(truth)
    for rel, pts in truth.items():
        src = cv2.imread(str(raw / rel))
        # independent reference warp: closed-form complex least squares, then the same OpenCV warp
        zs, zd = pts[:, 0] + 1j * pts[:, 1], ARCFACE_112[:, 0] + 1j * ARCFACE_112[:, 1]
        a = ((zd - zd.mean()) * np.conj(zs - zs.mean())).sum() / (np.abs(zs - zs.mean()) ** 2).sum()
        b = zd.mean() - a * zs.mean()
        m = np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])
        expected = cv2.warpAffine(src, m, (112, 112), borderValue=0)
        # crops keep the source's file type; JPEGs are written at quality 95 (gluonface.align.image)
        expected = cv2.imdecode(cv2.imencode(".jpg", expected, [cv2.IMWRITE_JPEG_QUALITY, 95])[1], 1)
        got = cv2.imread(str(dst / rel))
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 0.5, rel


def test_cli_user_errors(photo_tree, tmp_path):
    proc = gluonface("align", str(photo_tree), str(photo_tree))
    assert proc.returncode == 2 and "fix:" in proc.stderr and "Traceback" not in proc.stderr
    proc = gluonface("align", str(photo_tree), str(tmp_path / "x"), "--lst", str(tmp_path / "none.lst"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = gluonface("align", str(photo_tree), str(tmp_path / "y"), "--min-face", "5")
    assert proc.returncode == 2 and "12" in proc.stderr and "Traceback" not in proc.stderr


def test_unexpected_error_on_one_image_is_reported_not_fatal(tmp_path, monkeypatch):
    from gluonface.align import batch, pipeline
    src = tmp_path / "src"
    pts = {}
    for name in ("a/0.png", "a/1.png"):
        pose = cv2.getRotationMatrix2D((56, 56), 0, 2.0)
        pts[name] = transform_points(pose, ARCFACE_112)
        save(src / name, render_blobs(pts[name], (260, 260), 3.0))
    write_landmarks(str(tmp_path / "lm.tsv"), pts)
    real = pipeline.align_image

    calls = []

    def flaky(image, **kw):  # in-process jobs run in path order: the second one (a/1.png) fails
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated decoder bug")
        return real(image, **kw)
    monkeypatch.setattr(batch.pipeline, "align_image", flaky)
    summary = align_tree(str(src), str(tmp_path / "out"), landmarks=str(tmp_path / "lm.tsv"), progress=False)
    assert summary.written == 1 and summary.counts["error"] == 1
    assert read_report(tmp_path / "out" / "align_report.tsv")["a/1.png"] == ["error",
                                                                              "RuntimeError: simulated decoder bug"]
