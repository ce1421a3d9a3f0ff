"""MXNet RecordIO, byte for byte, in pure Python (no MXNet import, fork- and pickle-friendly).

Format (dmlc-core ``recordio.h`` and ``mxnet/recordio.py``):

* ``.rec``: records one after another. Each record part is ``uint32 magic 0xced7230a``, ``uint32 lrec``
  (``cflag << 29 | length``), ``length`` payload bytes, zero padding to a multiple of 4. A payload that
  contains the magic word at a 4-byte-aligned offset is split there (``cflag`` 1 = first part, 2 = middle,
  3 = last); the reader re-inserts the magic between parts.
* ``.idx``: text, one ``"<key>\\t<byte offset>\\n"`` line per record.
* Payload of an image record: ``IRHeader`` packed as ``<IfQQ`` (flag, label, id, id2; 24 bytes); when the
  label is a vector, ``flag`` is its length, the header label is 0 and the ``flag`` float32 values follow
  the header; then the encoded image.
"""
import os
import struct
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_PART = struct.Struct("<II")


class RecordError(Exception):
    """A malformed record; the message names the byte offset. Readers wrap it with the file name."""


class IRHeader(NamedTuple):
    """Image-record header. ``label`` is a float or a float32 vector (then ``flag == len(label)``)."""
    flag: int
    label: Union[float, np.ndarray]
    id: int
    id2: int


def pack_payload(label, image: bytes = b"", id: int = 0, id2: int = 0) -> bytes:
    """Build a record payload the way ``mx.recordio.pack`` does.

    Args:
        label: a number (stored in the header, flag 0) or a sequence of numbers (float32 vector after the
            header, flag = its length).
        image: encoded image bytes (empty for insightface header / identity records).
    """
    if np.ndim(label) == 0:
        return _HEADER.pack(0, float(label), id, id2) + image
    vec = np.asarray(label, dtype="<f4").ravel()
    return _HEADER.pack(vec.size, 0.0, id, id2) + vec.tobytes() + image


def unpack_payload(payload: bytes) -> Tuple[IRHeader, bytes]:
    """Inverse of :func:`pack_payload`: ``(IRHeader, image bytes)``."""
    if len(payload) < _HEADER.size:
        raise RecordError(f"payload of {len(payload)} bytes is shorter than the 24-byte IRHeader")
    flag, label, id_, id2 = _HEADER.unpack_from(payload)
    pos = _HEADER.size
    if flag > 0:
        end = pos + 4 * flag
        if end > len(payload):
            raise RecordError(f"header says {flag} label values but the payload has only {len(payload)} bytes")
        label = np.frombuffer(payload, dtype="<f4", count=flag, offset=pos).astype(np.float32)
        pos = end
    return IRHeader(flag, label, id_, id2), payload[pos:]


def encode_record(payload: bytes) -> bytes:
    """Frame one payload as RecordIO bytes (splitting at aligned magic words exactly like dmlc-core)."""
    out = []
    n = len(payload)
    start = 0
    # Only aligned occurrences matter; scanning with find() keeps this fast for large JPEGs.
    pos = payload.find(_MAGIC_BYTES)
    while 0 <= pos <= n - 4:
        if pos % 4 == 0:
            cflag = 1 if start == 0 else 2
            out.append(_PART.pack(MAGIC, (cflag << 29) | (pos - start)))
            out.append(payload[start:pos])
            start = pos + 4
        pos = payload.find(_MAGIC_BYTES, pos + 1)
    cflag = 3 if start != 0 else 0
    out.append(_PART.pack(MAGIC, (cflag << 29) | (n - start)))
    out.append(payload[start:])
    out.append(b"\0" * ((4 - n % 4) % 4))
    return b"".join(out)


def read_record_at(fd: int, offset: int, file_size: int) -> bytes:
    """Read the payload of the record starting at byte ``offset`` of an open ``.rec`` descriptor."""
    parts = []
    pos = offset
    while True:
        head = os.pread(fd, 8, pos)
        if len(head) < 8:
            raise RecordError(f"file ends inside the record header at byte {pos}")
        magic, lrec = _PART.unpack(head)
        if magic != MAGIC:
            raise RecordError(f"no RecordIO magic at byte {pos} (found 0x{magic:08x})")
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        if pos + 8 + length > file_size:
            raise RecordError(f"record at byte {pos} claims {length} bytes but the file ends at {file_size}")
        data = os.pread(fd, length, pos + 8)
        parts.append(data)
        pos += 8 + ((length + 3) & ~3)
        if cflag in (0, 3):
            break
        parts.append(_MAGIC_BYTES)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_label_at(fd: int, offset: int):
    """Read only the label of the record at ``offset`` (first part only; cheap): float or float32 vector."""
    head = os.pread(fd, 8 + _HEADER.size + 16, offset)
    if len(head) < 8 + _HEADER.size:
        raise RecordError(f"file ends inside the record at byte {offset}")
    magic, lrec = _PART.unpack_from(head)
    if magic != MAGIC:
        raise RecordError(f"no RecordIO magic at byte {offset} (found 0x{magic:08x})")
    flag, label, _, _ = _HEADER.unpack_from(head, 8)
    if flag == 0:
        return label
    need = 8 + _HEADER.size + 4 * flag
    if len(head) < need:
        head = os.pread(fd, need, offset)
    return np.frombuffer(head, dtype="<f4", count=flag, offset=8 + _HEADER.size).astype(np.float32)


def read_index(idx_path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Parse a ``.idx`` file into ``(keys (R,) int64, offsets (R,) int64)`` in file order."""
    with open(idx_path, "rb") as f:
        text = f.read()
    if not text.strip():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    try:
        flat = np.array(text.split(), dtype=np.int64)
    except ValueError as exc:
        raise RecordError(f"a line is not '<key>\\t<offset>': {exc}") from None
    if flat.size % 2:
        raise RecordError("odd number of fields; every line must be '<key>\\t<offset>'")
    return flat[0::2].copy(), flat[1::2].copy()


def scan_offsets(rec_path: str) -> np.ndarray:
    """Walk a ``.rec`` from the start and return the byte offset of every record, ``(R,) int64``."""
    offsets = []
    size = os.path.getsize(rec_path)
    with open(rec_path, "rb") as f:
        pos = 0
        first = True
        while pos < size:
            head = f.read(8)
            if len(head) < 8:
                raise RecordError(f"file ends inside the record header at byte {pos}")
            magic, lrec = _PART.unpack(head)
            if magic != MAGIC:
                raise RecordError(f"no RecordIO magic at byte {pos}")
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            if first:
                offsets.append(pos)
            first = cflag in (0, 3)
            skip = (length + 3) & ~3
            f.seek(skip, 1)
            pos += 8 + skip
            if pos > size:
                raise RecordError(f"record at byte {offsets[-1]} runs past the end of the file")
    return np.asarray(offsets, dtype=np.int64)


class RecordFileWriter:
    """Append-only writer of ``.rec`` + ``.idx`` (the layout ``mx.recordio.MXIndexedRecordIO`` writes)."""

    def __init__(self, rec_path: str, idx_path: Optional[str]):
        self._rec = open(rec_path, "wb")
        self._idx = open(idx_path, "w", encoding="ascii", newline="\n") if idx_path else None
        self._pos = 0

    def write(self, key: int, payload: bytes) -> None:
        """Append one record under integer ``key``."""
        data = encode_record(payload)
        if self._idx is not None:
            self._idx.write(f"{key}\t{self._pos}\n")
        self._rec.write(data)
        self._pos += len(data)

    def close(self) -> None:
        self._rec.close()
        if self._idx is not None:
            self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
