"""`gluonface pack --align`: raw photos straight into a rec through the alignment preprocess hook."""
import os
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data

from gluonface.align.preprocess import AlignPreprocess
from gluonface.align.transform import ARCFACE_112, transform_points
from gluonface.data.landmarks import write_landmarks
from gluonface.data.pack import SkipImage
from gluonface.data.record import FaceRecordDataset


def gluonface(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "gluonface", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_pack_align_detects_and_skips(tmp_path):
    astro = skimage.data.astronaut()
    src = tmp_path / "photos"
    for ident, image in (("a", astro), ("b", astro[:, ::-1]), ("c", np.full((200, 200, 3), 127, np.uint8))):
        (src / ident).mkdir(parents=True)
        cv2.imwrite(str(src / ident / "0.png"), np.ascontiguousarray(image[:, :, ::-1]))
    proc = gluonface("pack", str(src), str(tmp_path / "rec" / "train"), "--align", "--workers", "2",
                     "--quiet")
    assert proc.returncode == 0, proc.stderr
    ds = FaceRecordDataset(str(tmp_path / "rec" / "train"))
    assert len(ds) == 2 and ds.image_size == (112, 112)
    skipped = (tmp_path / "rec" / "train.skipped.tsv").read_text()
    assert "c/0.png" in skipped and "no_face" in skipped
    img, _ = ds[0]
    # the packed crop is the aligned face: compare with the in-process alignment of the same photo
    direct = AlignPreprocess()(astro, "a/0.png")
    assert np.abs(img.astype(int) - direct.astype(int)).mean() < 3.0  # JPEG in the rec


def test_pack_align_from_landmarks(tmp_path):
    src = tmp_path / "raw"
    (src / "x").mkdir(parents=True)
    pose = cv2.getRotationMatrix2D((56, 56), 20, 2.0)
    pose[:, 2] += 60
    pts = transform_points(pose, ARCFACE_112)
    raw = np.zeros((320, 320, 3), np.uint8)
    for x, y in pts:
        cv2.circle(raw, (int(round(x)), int(round(y))), 4, (255, 255, 255), -1)
    cv2.imwrite(str(src / "x" / "0.png"), raw)
    cv2.imwrite(str(src / "x" / "1.png"), raw)  # not in the landmarks file: skipped
    write_landmarks(str(tmp_path / "lm.tsv"), {"x/0.png": pts})
    proc = gluonface("pack", str(src), str(tmp_path / "rec" / "train"), "--align", "--landmarks",
                     str(tmp_path / "lm.tsv"), "--workers", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    ds = FaceRecordDataset(str(tmp_path / "rec" / "train"))
    assert len(ds) == 1
    img = ds[0][0].astype(float).mean(axis=2)
    for x, y in ARCFACE_112:  # dots land on the template
        assert img[int(round(y)), int(round(x))] > 150
    assert "not listed in the landmarks file" in (tmp_path / "rec" / "train.skipped.tsv").read_text()


def test_preprocess_object_pickles_without_detector():
    pre = AlignPreprocess(size=(112, 96), select="central")
    pre.detector()  # built in this process ...
    clone = pickle.loads(pickle.dumps(pre))
    assert clone._detector is None and clone.size == (112, 96) and clone.select == "central"
    with pytest.raises(SkipImage, match="no_face"):
        clone(np.full((100, 100, 3), 127, np.uint8), "x.png")
