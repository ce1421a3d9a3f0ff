"""FaceRecordDataset / RecordWriter against recs written independently of the project's writer."""
import os
import pickle
import struct

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluonface.data.record import FaceRecordDataset, RecordWriter
from gluonface.errors import GluonFaceError


def _png(img_rgb):
    return cv2.imencode(".png", img_rgb[:, :, ::-1])[1].tobytes()


def _faces(counts, size=(24, 20), seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 256, size + (3,), dtype=np.uint8) for _ in range(n)] for n in counts]


def _minimal_insightface_writer(folder, faces, vector_labels=True, property_text=None):
    """Write train.rec/.idx/property by hand: our own framing (magic, lrecord, padding) and IRHeader
    packing with struct, face2rec2-style [class, 1.0] labels, header and identity records."""
    def frame(payload):
        pad = (4 - len(payload) % 4) % 4
        return struct.pack("<II", 0xCED7230A, len(payload)) + payload + b"\0" * pad

    def payload(label, image=b""):
        if isinstance(label, (list, tuple)):
            return struct.pack("<IfQQ", len(label), 0.0, 0, 0) + struct.pack(f"<{len(label)}f", *label) + image
        return struct.pack("<IfQQ", 0, float(label), 0, 0) + image

    n = sum(len(f) for f in faces)
    records, key, ranges = [], 1, []
    for cls, imgs in enumerate(faces):
        ranges.append((key, key + len(imgs)))
        for img in imgs:
            label = [float(cls), 1.0] if vector_labels else float(cls)
            records.append((key, payload(label, _png(img))))
            key += 1
    records.append((0, payload([float(n + 1), float(n + 1 + len(faces))])))
    for i, (lo, hi) in enumerate(ranges):
        records.append((n + 1 + i, payload([float(lo), float(hi)])))
    pos, idx_lines = 0, []
    with open(os.path.join(folder, "train.rec"), "wb") as f:
        for k, p in records:          # header written after the images, like face2rec2
            data = frame(p)
            idx_lines.append(f"{k}\t{pos}\n")
            f.write(data)
            pos += len(data)
    with open(os.path.join(folder, "train.idx"), "w") as f:
        f.writelines(idx_lines)
    h, w = faces[0][0].shape[:2]
    with open(os.path.join(folder, "property"), "w") as f:
        f.write(property_text or f"{len(faces)},{h},{w}\n{n}\nshuffled\n")


def test_reads_independently_written_insightface_rec(tmp_path):
    faces = _faces([3, 1, 4, 2])
    _minimal_insightface_writer(str(tmp_path), faces)
    ds = FaceRecordDataset(str(tmp_path / "train"))
    assert ds.layout == "insightface"
    assert len(ds) == 10 and ds.num_classes == 4 and ds.image_size == (24, 20)
    assert ds.labels.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 3, 3]
    assert ds.identity_ranges == {0: (0, 3), 1: (3, 4), 2: (4, 8), 3: (8, 10)}
    flat = [img for imgs in faces for img in imgs]
    for i in range(len(ds)):
        img, label = ds[i]
        assert img.dtype == np.uint8 and img.shape == (24, 20, 3)
        np.testing.assert_array_equal(img, flat[i])
        assert label == ds.labels[i]
    # Folder and .rec forms of the prefix resolve to the same files.
    assert len(FaceRecordDataset(str(tmp_path))) == 10
    assert len(FaceRecordDataset(str(tmp_path / "train.rec"))) == 10


def test_identity_filter_keeps_original_labels(tmp_path):
    _minimal_insightface_writer(str(tmp_path), _faces([3, 1, 4, 2]), vector_labels=False)
    ds = FaceRecordDataset(str(tmp_path / "train"), min_images_per_identity=3)
    assert ds.num_classes == 4
    assert ds.labels.tolist() == [0, 0, 0, 2, 2, 2, 2]
    assert ds.identity_ranges == {0: (0, 3), 2: (3, 7)}
    assert ds[3][1] == 2


def test_headerless_rec_uses_per_record_labels(tmp_path):
    """mxnet im2rec style: no header, shuffled order, keys from 0; identities made contiguous on read."""
    faces = _faces([2, 3, 2], seed=1)
    items = [(cls, img) for cls, imgs in enumerate(faces) for img in imgs]
    order = [4, 0, 6, 2, 5, 1, 3]
    w = mx.recordio.MXIndexedRecordIO(str(tmp_path / "d.idx"), str(tmp_path / "d.rec"), "w")
    for key, i in enumerate(order):
        cls, img = items[i]
        w.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(cls), key, 0), _png(img)))
    w.close()
    ds = FaceRecordDataset(str(tmp_path / "d"))
    assert ds.layout == "headerless"
    assert ds.num_classes == 3 and ds.image_size == (24, 20)
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert ds.identity_ranges == {0: (0, 2), 1: (2, 5), 2: (5, 7)}
    for i in range(len(ds)):
        img, label = ds[i]
        assert any(np.array_equal(img, ref) for cls, ref in items if cls == label)


def test_writer_output_is_insightface_layout(tmp_path):
    faces = _faces([2, 3])
    w = RecordWriter(str(tmp_path / "out" / "train"))
    for cls, imgs in enumerate(faces):
        for img in imgs:
            w.add_image(_png(img), cls)
    w.close(image_size=(24, 20))
    r = mx.recordio.MXIndexedRecordIO(str(tmp_path / "out/train.idx"), str(tmp_path / "out/train.rec"), "r")
    header, image = mx.recordio.unpack(r.read_idx(0))
    assert header.flag == 2 and header.label.tolist() == [6.0, 8.0] and image == b""
    assert mx.recordio.unpack(r.read_idx(6))[0].label.tolist() == [1.0, 3.0]
    assert mx.recordio.unpack(r.read_idx(7))[0].label.tolist() == [3.0, 6.0]
    h, img = mx.recordio.unpack(r.read_idx(4))
    assert h.label == 1.0
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(img, np.uint8), 1)[:, :, ::-1], faces[1][1])
    r.close()
    assert open(tmp_path / "out/property").read() == "2,24,20\n"
    with pytest.raises(ValueError, match="group images"):
        w2 = RecordWriter(str(tmp_path / "bad" / "train"))
        w2.add_image(b"x", 0)
        w2.add_image(b"x", 1)
        w2.add_image(b"x", 0)


def test_dataset_pickles_for_worker_processes(tmp_path):
    _minimal_insightface_writer(str(tmp_path), _faces([2, 2]))
    ds = FaceRecordDataset(str(tmp_path))
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[3][0], ds[3][0])


# --- bad input --------------------------------------------------------------------------------------------
def test_missing_idx_names_file_and_pack_command(tmp_path):
    _minimal_insightface_writer(str(tmp_path), _faces([2]))
    os.remove(tmp_path / "train.idx")
    with pytest.raises(GluonFaceError, match=r"train\.idx.*gluonface pack"):
        FaceRecordDataset(str(tmp_path / "train"))
    with pytest.raises(GluonFaceError, match=r"no rec file .*nothere\.rec.*gluonface pack"):
        FaceRecordDataset(str(tmp_path / "nothere"))


def test_truncated_rec_is_reported_with_record_index(tmp_path):
    _minimal_insightface_writer(str(tmp_path), _faces([3, 3]))
    rec = tmp_path / "train.rec"
    data = rec.read_bytes()
    rec.write_bytes(data[: len(data) // 2])
    with pytest.raises(GluonFaceError, match=r"train\.rec is truncated: .*record \d+ at byte"):
        FaceRecordDataset(str(tmp_path / "train"))


def test_damaged_record_names_file_and_record(tmp_path):
    _minimal_insightface_writer(str(tmp_path), _faces([2, 2]))
    keys = {int(k): int(o) for k, o in (l.split() for l in open(tmp_path / "train.idx"))}
    with open(tmp_path / "train.rec", "r+b") as f:
        f.seek(keys[4])
        f.write(b"JUNK")
    ds = FaceRecordDataset(str(tmp_path / "train"))
    with pytest.raises(GluonFaceError, match=r"train\.rec: cannot read record 4 \(byte \d+\).*re-pack"):
        ds[3]
    ds[2]
    with open(tmp_path / "train.rec", "r+b") as f:  # the first image of an identity is read on open
        f.seek(keys[3])
        f.write(b"JUNK")
    with pytest.raises(GluonFaceError, match=r"train\.rec: cannot read record 3"):
        FaceRecordDataset(str(tmp_path / "train"))


def test_undecodable_image_names_record(tmp_path):
    w = RecordWriter(str(tmp_path / "train"))
    w.add_image(_png(_faces([1])[0][0]), 0)
    w.add_image(b"not an image at all", 0)
    w.close(image_size=(24, 20))
    ds = FaceRecordDataset(str(tmp_path / "train"))
    with pytest.raises(GluonFaceError, match=r"record 2 \(position 1\) does not decode"):
        ds[1]


def test_property_that_disagrees_with_rec(tmp_path):
    _minimal_insightface_writer(str(tmp_path), _faces([2, 2, 2]), property_text="2,24,20\n")
    with pytest.raises(GluonFaceError, match=r"property says 2 classes .* label 2; fix: write '3,24,20'"):
        FaceRecordDataset(str(tmp_path))
    (tmp_path / "property").write_text("3,112,112\n")
    with pytest.raises(GluonFaceError, match=r"property says images are 112x112 .* 24x20"):
        FaceRecordDataset(str(tmp_path))
    (tmp_path / "property").write_text("three,112\n")
    with pytest.raises(GluonFaceError, match=r"property.*not 'num_classes,H,W'"):
        FaceRecordDataset(str(tmp_path))
    os.remove(tmp_path / "property")  # no property: inferred from the rec
    ds = FaceRecordDataset(str(tmp_path))
    assert ds.num_classes == 3 and ds.image_size == (24, 20)
