"""A rec written by `gluonface pack`, read the way arcface_torch's ``MXFaceDataset`` reads one.

The reading convention (deepinsight/insightface, recognition/arcface_torch/dataset.py), restated here from
its documented steps rather than copied: open ``train.rec``/``train.idx`` with
``mx.recordio.MXIndexedRecordIO``; unpack record 0; if its header flag is > 0 its label is a vector whose
``label[0]`` is one past the last image key, so the images are keys ``1 .. label[0] - 1``; each image
record's label is a number, or a vector whose ``label[0]`` is the class; the payload decodes with
``mx.image.imdecode`` to RGB. The class count comes from the training config, which users copy from the
rec's ``property`` file (``num_classes,H,W``).
"""
import numbers
import os

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluonface.cli import main

IDENTITIES = {"alice": 3, "bob": 2, "carol": 4}


def _face(rng, h=112, w=112):
    """A smooth colour image (JPEG keeps it within a few grey levels)."""
    small = rng.uniform(30, 220, (6, 6, 3)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    rng = np.random.default_rng(0)
    sources = {}  # identity -> [(file bytes, expected RGB 112x112)]
    for name, count in IDENTITIES.items():
        os.makedirs(root / "faces" / name)
        sources[name] = []
        for k in range(count):
            if name == "carol" and k == 0:   # a PNG: re-encoded
                rgb, ext = _face(rng), ".png"
            elif name == "carol" and k == 1:  # another size: resized and re-encoded
                rgb, ext = _face(rng, 150, 130), ".jpg"
            else:                             # a 112x112 JPEG: its bytes are packed as they are
                rgb, ext = _face(rng), ".jpg"
            data = cv2.imencode(ext, rgb[:, :, ::-1])[1].tobytes()
            (root / "faces" / name / f"{k}{ext}").write_bytes(data)
            shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
            sources[name].append((data, cv2.resize(shown, (112, 112), interpolation=cv2.INTER_AREA)))
    assert main(["pack", str(root / "faces"), str(root / "out" / "train"), "--workers", "1", "--quiet"]) == 0
    return root / "out", sources


def _read_like_mxfacedataset(folder):
    """[(class, RGB image, payload bytes)] of every image, following arcface_torch's reading convention."""
    rec = mx.recordio.MXIndexedRecordIO(str(folder / "train.idx"), str(folder / "train.rec"), "r")
    header, _ = mx.recordio.unpack(rec.read_idx(0))
    assert header.flag > 0, "header record 0 must carry the image key range"
    imgidx = np.array(range(1, int(header.label[0])))
    out = []
    for key in imgidx:
        header, payload = mx.recordio.unpack(rec.read_idx(int(key)))
        label = header.label
        if not isinstance(label, numbers.Number):
            label = label[0]
        out.append((int(label), mx.image.imdecode(payload).asnumpy(), payload))
    rec.close()
    return out


def test_arcface_torch_reading_convention(packed):
    folder, sources = packed
    samples = _read_like_mxfacedataset(folder)
    assert len(samples) == sum(IDENTITIES.values())
    num_classes, height, width = (int(v) for v in (folder / "property").read_text().strip().split(","))
    assert (num_classes, height, width) == (len(IDENTITIES), 112, 112)
    rows = [line.split("\t") for line in (folder / "train.identities.tsv").read_text().splitlines()[1:]]
    names = {int(label): name for label, name, _ in rows}
    assert sorted(names) == list(range(num_classes))  # labels 0..K-1, as a classifier of K classes needs
    assert sorted(set(names.values())) == sorted(IDENTITIES)
    matched = {name: [] for name in IDENTITIES}
    for label, image, payload in samples:
        assert image.shape == (112, 112, 3) and image.dtype == np.uint8
        candidates = sources[names[label]]  # the image must be one of its identity's, in RGB order
        errors = [np.abs(image.astype(float) - ref.astype(float)).mean() for _, ref in candidates]
        best = int(np.argmin(errors))
        assert errors[best] < 3.0, (names[label], errors)
        matched[names[label]].append(best)
        if names[label] != "carol":
            assert payload == candidates[best][0]  # 112x112 JPEGs are packed byte for byte
    assert {name: sorted(v) for name, v in matched.items()} == {n: list(range(c)) for n, c in IDENTITIES.items()}
    # Swapped colour channels would be far off: the check above can fail.
    label, image, _ = samples[0]
    assert min(np.abs(image[:, :, ::-1].astype(float) - ref.astype(float)).mean()
               for _, ref in sources[names[label]]) > 3.0
