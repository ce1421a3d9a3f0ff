"""Alignment against insightface 2.1's own: ``gluonface align`` crops vs ``face_align.norm_crop`` on the same
images and landmarks, and the insightface-style flow (detector points -> its recognition class ``get``) vs
``gluonface align`` -> ``gluonface embed``.

The crops cannot be bit-identical: insightface estimates the similarity in float32 (scikit-image's
``SimilarityTransform`` on float32 points and template), gluonface in float64, so the matrices differ by
~1e-5 px. ``cv2.warpAffine`` rounds source coordinates to 1/32 px, so where such a difference crosses a
rounding boundary one bilinear sample moves by 1/32 of the difference between two neighbouring pixels: at
most 255 / 32 < 8 grey levels, +1 for the final rounding, and only at a small fraction of pixels.
"""
import cv2
import numpy as np
import pytest
import skimage.data
from insightface.app.common import Face
from insightface.model_zoo import model_zoo
from insightface.utils import face_align

from gluonface.align.mtcnn import MTCNNDetector
from gluonface.align.transform import arcface_template
from gluonface.cli import main
from gluonface.data.landmarks import read_landmarks, write_landmarks
from gluonface.data.synthetic import SynthSpec, render_image

MAX_LEVELS = 9           # 255 / 32 rounded up, + 1 (see the module docstring)
MAX_DIFFERING = 0.01     # fraction of pixel values that may differ at all
MAX_MEAN_LEVELS = 0.05   # mean absolute difference over the crop
SIZES = (112, 128, 224)  # 128: insightface's own template for multiples of 128 (x + 8, not a rescale)


def _placements(rng, n):
    """``n`` random face placements on a 512x512 photo: the template under a random similarity + noise."""
    out = []
    for _ in range(n):
        s, th = rng.uniform(1.2, 3.5), rng.uniform(-0.5, 0.5)
        rot = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        out.append(arcface_template(112) @ rot.T + rng.uniform(40, 300, 2) + rng.normal(0, 1.5, (5, 2)))
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A tree of real and synthetic unaligned photos (PNG, lossless) and a landmarks file for them."""
    root = tmp_path_factory.mktemp("photos")
    astro = skimage.data.astronaut()
    faces = MTCNNDetector(min_face=40).detect(astro)
    images, points = {"astronaut.png": astro}, {"astronaut.png": max(faces, key=lambda f: f.size).points}
    for k, p in enumerate(_placements(np.random.default_rng(0), 6)):
        images[f"astronaut_{k}.png"], points[f"astronaut_{k}.png"] = astro, p
    spec = SynthSpec(identities=4, images_per_id=1, seed=7, raw=True)
    for i in range(4):
        bgr, lm = render_image(spec, i, 0)
        images[f"synth_{i}.png"], points[f"synth_{i}.png"] = bgr[:, :, ::-1], lm
    (root / "src").mkdir()
    for name, rgb in images.items():
        assert cv2.imwrite(str(root / "src" / name), rgb[:, :, ::-1])
    write_landmarks(str(root / "landmarks.tsv"), points)
    return root, images, read_landmarks(str(root / "landmarks.tsv"))  # the points as the file holds them


@pytest.mark.parametrize("size", SIZES)
def test_align_cli_crops_match_norm_crop(photos, size):
    root, images, points = photos
    dst = root / f"aligned{size}"
    assert main(["align", str(root / "src"), str(dst), "--landmarks", str(root / "landmarks.tsv"), "--size",
                 str(size), "--no-progress"]) == 0
    worst = []
    for name, rgb in images.items():
        ours = cv2.imread(str(dst / name))                                  # BGR, as written
        theirs = face_align.norm_crop(rgb[:, :, ::-1].copy(), points[name], image_size=size)
        assert ours.shape == theirs.shape == (size, size, 3)
        diff = np.abs(ours.astype(int) - theirs.astype(int))
        worst.append((diff.max(), (diff > 0).mean(), diff.mean()))
    levels, differing, mean = np.max(worst, axis=0)
    assert levels <= MAX_LEVELS and differing <= MAX_DIFFERING and mean <= MAX_MEAN_LEVELS, worst


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import mxnet as mx
    from gluonface.export.run import export_model
    from gluonface.models import get_model
    net = get_model("iresnet_tiny", embedding_size=64)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 112, 112)))
    prefix = str(tmp_path_factory.mktemp("model") / "m")
    export_model(net, prefix, onnx=True)
    return prefix


def test_insightface_flow_on_our_detections_matches_align_then_embed(photos, model, tmp_path):
    """gluonface's MTCNN finds the face and its 5 points; insightface's recognition class cuts and embeds
    it (``get(img, face)``); the embedding is the one `gluonface align` -> `gluonface embed` gives."""
    root, images, _ = photos
    astro = images["astronaut.png"]
    (tmp_path / "src").mkdir()
    assert cv2.imwrite(str(tmp_path / "src" / "astronaut.png"), astro[:, :, ::-1])
    assert main(["align", str(tmp_path / "src"), str(tmp_path / "aligned"), "--no-progress"]) == 0
    assert main(["embed", str(tmp_path / "aligned" / "astronaut.png"), "--model", model, "--no-flip",
                 "--out", str(tmp_path / "e.npy"), "--no-progress"]) == 0
    ours = np.load(tmp_path / "e.npy")[0]
    det = max(MTCNNDetector(min_face=40).detect(astro), key=lambda f: f.size)  # `gluonface align`'s defaults
    face = Face(bbox=det.box, kps=det.points, det_score=det.score)
    recognizer = model_zoo.get_model(model + ".onnx", providers=["CPUExecutionProvider"])
    theirs = recognizer.get(astro[:, :, ::-1].copy(), face)
    assert face.embedding is theirs and theirs.shape == (64,)
    cosine = float(ours @ theirs / np.linalg.norm(theirs))
    assert cosine >= 0.99, cosine
    # Teeth: the same network on another crop of the photo (the second detection) is clearly different.
    other = cv2.resize(astro[200:300, 100:200], (112, 112))
    far = recognizer.get_feat(other[:, :, ::-1].copy())[0]
    assert float(ours @ far / np.linalg.norm(far)) < 0.99
