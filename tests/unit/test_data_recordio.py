"""RecordIO framing and IRHeader payloads, checked byte for byte against MXNet's own implementation."""
import os

import mxnet as mx
import numpy as np
import pytest

from gluonface.data import recordio

MAGIC = recordio._MAGIC_BYTES


def _payloads():
    rng = np.random.default_rng(0)
    yield b""
    yield b"abc"
    yield rng.bytes(1001)
    # The magic word at aligned and unaligned offsets, back to back, at the start and at the end.
    yield MAGIC + b"xy"
    yield b"ab\0\0" + MAGIC + b"xyz" + MAGIC + MAGIC + b"12345" + b"q" + MAGIC
    yield b"a" + MAGIC + b"bcd"
    yield rng.bytes(64) + MAGIC + rng.bytes(60) + MAGIC


@pytest.mark.parametrize("payload", list(_payloads()))
def test_framing_matches_mxnet_and_reads_back(tmp_path, payload):
    path = str(tmp_path / "x.rec")
    w = mx.recordio.MXRecordIO(path, "w")
    w.write(payload)
    w.close()
    with open(path, "rb") as f:
        theirs = f.read()
    assert recordio.encode_record(payload) == theirs
    fd = os.open(path, os.O_RDONLY)
    try:
        assert recordio.read_record_at(fd, 0, len(theirs)) == payload
    finally:
        os.close(fd)
    assert recordio.scan_offsets(path).tolist() == [0]


@pytest.mark.parametrize("label", [3.0, [7.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
def test_payload_matches_mx_pack(label):
    ours = recordio.pack_payload(label, b"IMG", id=5, id2=9)
    theirs = mx.recordio.pack(mx.recordio.IRHeader(0, label, 5, 9), b"IMG")
    assert ours == theirs
    header, image = recordio.unpack_payload(theirs)
    assert image == b"IMG" and header.id == 5 and header.id2 == 9
    np.testing.assert_array_equal(np.ravel(header.label), np.ravel(label))


def test_writer_index_and_offsets_agree_with_mxnet_reader(tmp_path):
    rec, idx = str(tmp_path / "a.rec"), str(tmp_path / "a.idx")
    payloads = [recordio.pack_payload(float(i), os.urandom(13 * i) + MAGIC) for i in range(6)]
    with recordio.RecordFileWriter(rec, idx) as w:
        for i, p in enumerate(payloads):
            w.write(i + 10, p)
    r = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
    for i, p in enumerate(payloads):
        assert r.read_idx(i + 10) == p
    r.close()
    keys, offsets = recordio.read_index(idx)
    assert keys.tolist() == list(range(10, 16))
    assert offsets.tolist() == recordio.scan_offsets(rec).tolist()
    fd = os.open(rec, os.O_RDONLY)
    assert recordio.read_label_at(fd, int(offsets[3])) == 3.0
    os.close(fd)


def test_damaged_records_raise_record_error(tmp_path):
    path = str(tmp_path / "x.rec")
    data = recordio.encode_record(b"hello world!")
    with open(path, "wb") as f:
        f.write(data[:10])
    fd = os.open(path, os.O_RDONLY)
    with pytest.raises(recordio.RecordError, match="claims"):
        recordio.read_record_at(fd, 0, 10)
    os.close(fd)
    with open(path, "wb") as f:
        f.write(b"\0" * 16)
    fd = os.open(path, os.O_RDONLY)
    with pytest.raises(recordio.RecordError, match="magic"):
        recordio.read_record_at(fd, 0, 16)
    os.close(fd)
