"""Synthetic identities: determinism, true landmarks, identity in geometry but not in mean colour."""
import os

import cv2
import numpy as np
import pytest

from gluonface.data.landmarks import read_landmarks
from gluonface.data.synthetic import SynthSpec, generate, render_image
from gluonface.data.synthetic_face import ARCFACE_TEMPLATE
from gluonface.errors import GluonFaceError


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            full = os.path.join(dirpath, f)
            out[os.path.relpath(full, root)] = open(full, "rb").read()
    return out


def test_same_seed_same_bytes_for_any_worker_count(tmp_path):
    spec = SynthSpec(identities=3, images_per_id=4, seed=11)
    generate(str(tmp_path / "a"), spec, workers=1, progress=False)
    generate(str(tmp_path / "b"), spec, workers=2, progress=False)
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert len(a) == 3 * 4 + 1 and a == b
    generate(str(tmp_path / "c"), SynthSpec(identities=3, images_per_id=4, seed=12), progress=False)
    c = _tree_bytes(tmp_path / "c")
    assert not set(a) & set(c) - {"landmarks.tsv"}   # folder names carry the seed
    assert a["landmarks.tsv"] != c["landmarks.tsv"]
    with pytest.raises(GluonFaceError, match="already holds identity folders"):
        generate(str(tmp_path / "a"), spec, progress=False)


@pytest.mark.parametrize("raw", [False, True])
def test_an_image_does_not_depend_on_the_images_rendered_before_it(raw):
    """Identities are compiled once and cached with their generator; image j must still be the same whether it
    is rendered first, last or in the middle of its identity."""
    spec = SynthSpec(identities=2, images_per_id=3, seed=3, raw=raw)
    keys = [(i, j) for i in range(2) for j in range(3)]
    forward = {k: render_image(spec, *k) for k in keys}
    backward = {k: render_image(spec, *k) for k in reversed(keys)}
    for k in keys:
        assert np.array_equal(forward[k][0], backward[k][0]) and np.array_equal(forward[k][1], backward[k][1])
    assert not np.array_equal(forward[0, 0][1], forward[0, 1][1])  # and the images do differ


def test_landmark_file_lists_every_image_near_the_template(tmp_path):
    generate(str(tmp_path), SynthSpec(identities=4, images_per_id=5, seed=2), progress=False)
    marks = read_landmarks(str(tmp_path / "landmarks.tsv"))
    files = sorted(k for k in _tree_bytes(tmp_path) if k.endswith(".jpg"))
    assert sorted(marks) == files
    for rel, pts in marks.items():
        img = cv2.imread(str(tmp_path / rel))
        assert img.shape == (112, 112, 3)
        assert pts.shape == (5, 2) and pts.dtype == np.float32
        assert np.abs(pts - ARCFACE_TEMPLATE).max() < 16       # aligned: roughly the ArcFace template
        assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # image-left first
        assert pts[0, 1] < pts[2, 1] < pts[3, 1]               # eyes above nose above mouth


def _similarity_normalise(pts):
    """Remove translation, rotation and scale (Umeyama without reflection) → canonical 5 points."""
    src = pts - pts.mean(0)
    dst = ARCFACE_TEMPLATE - ARCFACE_TEMPLATE.mean(0)
    u, s, vt = np.linalg.svd(dst.T @ src)
    r = u @ vt
    scale = s.sum() / (src ** 2).sum()
    return scale * src @ r.T


def test_raw_landmarks_follow_the_pose():
    """Raw images put the same identity at random position/scale/rotation; after removing the similarity
    its landmarks agree across images (up to expression/yaw) far better than across identities."""
    spec = SynthSpec(identities=6, images_per_id=6, seed=4, raw=True)
    canon = np.zeros((6, 6, 5, 2))
    for i in range(6):
        for j in range(6):
            img, pts = render_image(spec, i, j)
            assert 160 <= img.shape[0] <= 250 and 160 <= img.shape[1] <= 250
            assert (pts >= 0).all() and (pts[:, 0] < img.shape[1]).all() and (pts[:, 1] < img.shape[0]).all()
            canon[i, j] = _similarity_normalise(pts)
    within = np.mean([np.abs(canon[i] - canon[i].mean(0)).mean() for i in range(6)])
    between = np.abs(canon.mean(1) - canon.mean((0, 1))).mean()
    assert within < 0.5 * between


def test_identity_is_in_geometry_not_in_mean_colour():
    k, m = 30, 10
    spec = SynthSpec(identities=k, images_per_id=m, seed=7)
    colour, geometry, labels = [], [], []
    for i in range(k):
        for j in range(m):
            img, lm = render_image(spec, i, j)
            colour.append(img.reshape(-1, 3).mean(0))
            eyes = np.linalg.norm(lm[1] - lm[0])
            mid_eye = (lm[0] + lm[1]) / 2
            geometry.append([np.linalg.norm(lm[4] - lm[3]) / eyes,
                             np.linalg.norm((lm[3] + lm[4]) / 2 - mid_eye) / eyes,
                             np.linalg.norm(lm[2] - mid_eye) / eyes])
            labels.append(i)
    labels = np.array(labels)

    def nearest_centroid_accuracy(x):
        x = np.asarray(x)
        train = np.arange(len(labels)) % m < m // 2
        cent = np.stack([x[train & (labels == c)].mean(0) for c in range(k)])
        d = (((x[~train][:, None] - cent[None]) / x[train].std(0)) ** 2).sum(-1)
        return (d.argmin(1) == labels[~train]).mean()

    assert nearest_centroid_accuracy(colour) < 0.2     # chance is 1/30
    assert nearest_centroid_accuracy(geometry) > 0.8


def test_bad_synth_arguments(tmp_path):
    with pytest.raises(GluonFaceError, match="--identities"):
        generate(str(tmp_path), SynthSpec(identities=0, images_per_id=3), progress=False)
    with pytest.raises(GluonFaceError, match="--size 16 is too small"):
        generate(str(tmp_path), SynthSpec(identities=1, images_per_id=1, size=16), progress=False)
