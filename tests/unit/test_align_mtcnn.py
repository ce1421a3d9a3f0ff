"""MTCNN on a real photo (scikit-image's astronaut): points, consistency under flip/rotation/scale, crops."""
import cv2
import numpy as np
import pytest
import skimage.data

from gluonface.align import align_image, arcface_template, transform_points
from gluonface.align.mtcnn import MTCNNDetector, pack_levels, pyramid_scales
from gluonface.align.pipeline import MULTIPLE, NO_FACE, OK, TOO_SMALL

# Annotated by hand once on a 6x zoom of the 512x512 image (pupil centres, nose tip, mouth corners).
HAND_POINTS = np.array([[202.5, 101.3], [246.7, 103.3], [223.0, 127.5], [203.0, 140.0], [244.2, 141.3]])
HAND_BOX_CENTRE = np.array([224.0, 116.0])


@pytest.fixture(scope="module")
def detector():
    return MTCNNDetector(min_face=40)


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def reference(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1, [f.score for f in faces]
    return faces[0]


def test_finds_the_face_and_its_points(reference):
    assert reference.score > 0.99
    box = reference.box
    np.testing.assert_allclose([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], HAND_BOX_CENTRE, atol=8)
    assert 75 < reference.size < 115
    err = np.linalg.norm(reference.points - HAND_POINTS, axis=1)
    assert err.max() < 4.0, err


def test_consistent_under_horizontal_flip(detector, astronaut, reference):
    w = astronaut.shape[1]
    faces = detector.detect(np.ascontiguousarray(astronaut[:, ::-1]))
    assert len(faces) == 1
    back = faces[0].points.copy()
    back[:, 0] = w - 1 - back[:, 0]
    back = back[[1, 0, 2, 4, 3]]  # mirrored image-left/right points swap roles
    err = np.linalg.norm(back - reference.points, axis=1)
    assert err.mean() < 2.0 and err.max() < 3.5, err


@pytest.mark.parametrize("angle", [-30, 30])
def test_consistent_under_rotation(detector, astronaut, reference, angle):
    rot = cv2.getRotationMatrix2D((256, 256), angle, 1.0)
    rotated = cv2.warpAffine(astronaut, rot, (512, 512), flags=cv2.INTER_LINEAR)
    faces = detector.detect(rotated)
    assert faces, "no face on the rotated image"
    expected = transform_points(rot, reference.points)
    best = min(faces, key=lambda f: np.abs(f.points - expected).sum())
    assert np.linalg.norm(best.points - expected, axis=1).mean() < 3.0


@pytest.mark.parametrize("side", [256, 160])
def test_consistent_under_downscale(astronaut, reference, side):
    small = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    s = side / 512.0
    faces = MTCNNDetector(min_face=20).detect(small)
    assert faces
    expected = (reference.points + 0.5) * s - 0.5  # pixel-centre convention under resizing
    best = min(faces, key=lambda f: np.abs(f.points - expected).sum())
    # within ~2 original pixels, measured in the small image
    assert np.linalg.norm(best.points - expected, axis=1).mean() < 2.0 * max(s, 0.5)


def test_aligned_crop_is_centred(detector, astronaut, tmp_path):
    result = align_image(astronaut, detector=detector, size=112)
    assert result.status == OK and result.crop.shape == (112, 112, 3)
    path = tmp_path / "astronaut_112.png"
    cv2.imwrite(str(path), result.crop[:, :, ::-1])
    assert cv2.imread(str(path)).shape == (112, 112, 3)
    residual = np.linalg.norm(transform_points(result.matrix, result.points) - arcface_template(112), axis=1)
    assert residual.mean() < 6.0, residual  # a real face vs the mean template: a few px, not 10+
    # the hand-annotated points land near the template too (independent of the detector's own points)
    hand = np.linalg.norm(transform_points(result.matrix, HAND_POINTS) - arcface_template(112), axis=1)
    assert hand.mean() < 7.0, hand


def test_gray_and_rgba_inputs(detector, astronaut, reference):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    for image in (gray, gray[:, :, None], rgba):
        faces = detector.detect(image)
        assert faces and np.linalg.norm(faces[0].points - reference.points, axis=1).max() < 3.0


def test_huge_image_detected_downscaled_points_at_full_resolution(astronaut, reference):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_LINEAR)
    det = MTCNNDetector(min_face=160, max_side=512)  # detection runs on a 512 copy
    faces = det.detect(big)
    assert faces
    expected = (reference.points + 0.5) * 4 - 0.5
    assert np.linalg.norm(faces[0].points - expected, axis=1).mean() < 8.0  # 2 px at 512


def test_no_face_tiny_and_several(detector, astronaut):
    blank = np.full((200, 200, 3), 127, np.uint8)
    assert detector.detect(blank) == []
    assert align_image(blank, detector=detector).status == NO_FACE
    tiny = astronaut[::40, ::40]
    assert align_image(tiny, detector=detector).status == TOO_SMALL
    face = astronaut[40:200, 150:300]  # 160x150 around the face
    small = cv2.resize(face, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    canvas = np.full((240, 640, 3), 90, np.uint8)
    canvas[40:200, 0:150] = face  # the big face at the left edge
    y, x = 120 - small.shape[0] // 2, 320 - small.shape[1] // 2
    canvas[y:y + small.shape[0], x:x + small.shape[1]] = small[:, ::-1]  # a smaller one in the middle
    largest = align_image(canvas, detector=detector, select="largest")
    central = align_image(canvas, detector=detector, select="central")
    assert largest.status == central.status == MULTIPLE and "2 faces" in largest.reason
    assert largest.points[:, 0].mean() < 150 < central.points[:, 0].mean()
    only = detector.detect(canvas, largest_only=True)
    assert len(only) == 1 and np.allclose(only[0].points, largest.points)


def test_pack_levels_even_disjoint_inside():
    sizes = [(int(np.ceil(300 * s)), int(np.ceil(457 * s))) for s in pyramid_scales(300, 457, 20)]
    offsets, (H, W) = pack_levels(sizes)
    occupied = np.zeros((H, W), np.int32)
    for (y, x), (h, w) in zip(offsets, sizes):
        assert y % 2 == 0 and x % 2 == 0
        occupied[y:y + h, x:x + w] += 1
    assert occupied.max() == 1 and occupied.sum() == sum(h * w for h, w in sizes)


def test_packed_pyramid_gives_the_same_detections(astronaut):
    a = MTCNNDetector(min_face=20).detect(astronaut)
    b = MTCNNDetector(min_face=20, pack_pyramid=False).detect(astronaut)
    assert len(a) == len(b) >= 1
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.points, fb.points, atol=1e-3)
        np.testing.assert_allclose(fa.box, fb.box, atol=1e-3)


def test_second_real_photo_grace_hopper(detector):
    """matplotlib ships grace_hopper.jpg (600x512): a larger face (eye distance ~85 px) with glasses."""
    import matplotlib.cbook
    from gluonface.align.image import read_rgb
    photo = read_rgb(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    hand = np.array([[221.3, 189.5], [305.0, 186.5], [266.3, 235.0], [232.5, 276.3], [305.0, 277.5]])
    faces = detector.detect(photo)
    assert len(faces) == 1 and faces[0].score > 0.99
    err = np.linalg.norm(faces[0].points - hand, axis=1)
    assert err.max() < 6.0, err  # ~7% of the eye distance
    mirrored = detector.detect(np.ascontiguousarray(photo[:, ::-1]))[0].points.copy()
    mirrored[:, 0] = photo.shape[1] - 1 - mirrored[:, 0]
    iod = np.linalg.norm(faces[0].points[1] - faces[0].points[0])
    flip_err = np.linalg.norm(mirrored[[1, 0, 2, 4, 3]] - faces[0].points, axis=1)
    assert flip_err.mean() / iod < 0.05, flip_err  # ~3 px at this face size
    result = align_image(photo, detector=detector)
    residual = np.linalg.norm(transform_points(result.matrix, result.points) - arcface_template(112), axis=1)
    assert result.status == OK and residual.mean() < 6.0
