"""Check that an MXNet NDArray file (``.params``, ``mx.nd.save``) was written completely.

Why: MXNet 1.9.1 writes these files through dmlc-core's ``FileStream``, which checks each ``fwrite`` but
not the final ``fclose``. When the disk fills up (or the file-size limit is hit) in the last buffered
write, the file is silently cut short and ``save_parameters`` returns as if all went well (seen here: a
40105-byte file left at 36864 bytes on a full tmpfs, no error). Renaming such a file into place would
publish a checkpoint that cannot be loaded. So checkpoints walk the file's structure before publishing:
a few small reads and seeks per array, never the data itself.

Layout (MXNet 1.x ``NDArray::Save`` of a list, little-endian): ``u64 0x112``, ``u64 0``, ``u64 count``;
per array ``u32 magic`` (``0xF993FAC9``: dense arrays with a storage type), ``i32 storage type``,
``i32 ndim``, ``ndim × i64`` dims, ``i32 dev_type``, ``i32 dev_id``, ``i32 dtype``, the data; then
``u64 count`` names, each ``u64 length`` + bytes. Other variants (sparse storage, numpy-shape files) are
not walked: ``expected_size`` returns None for them.
"""
import os
import struct

LIST_MAGIC = 0x112
ARRAY_MAGIC_V2 = 0xF993FAC9
# mshadow type flags -> bytes per element (float32, float64, float16, uint8, int32, int8, int64, bool,
# int16, uint16, uint32, uint64, bfloat16)
DTYPE_BYTES = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8, 7: 1, 8: 2, 9: 2, 10: 4, 11: 8, 12: 2}


class _Short(Exception):
    pass


def _read(f, fmt):
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) < size:
        raise _Short()
    return struct.unpack(fmt, data)


def expected_size(path):
    """The size in bytes the NDArray file at ``path`` must have, or None if its layout is not one walked here.

    A file cut short anywhere (even inside a header) gives a lower bound larger than the file: what the
    headers read so far imply; a complete file gives exactly its size."""
    actual = os.path.getsize(path)
    pos = 24
    with open(path, "rb") as f:
        try:
            magic, _, count = _read(f, "<QQQ")
            if magic != LIST_MAGIC:
                return None
            for _ in range(count):
                f.seek(pos)
                array_magic, stype, ndim = _read(f, "<Iii")
                if array_magic != ARRAY_MAGIC_V2 or stype != 0 or ndim < 0:
                    return None
                dims = _read(f, f"<{ndim}q") if ndim else ()
                pos += 12 + 8 * ndim
                if ndim == 0:          # an empty (none) array: nothing follows its shape
                    continue
                _, _, dtype = _read(f, "<iii")
                if dtype not in DTYPE_BYTES:
                    return None
                n = 1
                for d in dims:
                    n *= d
                pos += 12 + n * DTYPE_BYTES[dtype]
            f.seek(pos)
            (names,) = _read(f, "<Q")
            pos += 8
            for _ in range(names):
                f.seek(pos)
                (length,) = _read(f, "<Q")
                pos += 8 + length
            return pos
        except _Short:
            return max(actual + 1, pos)


def check_complete(path):
    """``None`` if the NDArray file at ``path`` is complete (or of a layout not walked), else a sentence
    saying how much of it is there."""
    expected = expected_size(path)
    actual = os.path.getsize(path)
    if expected is None or expected == actual:
        return None
    name = os.path.basename(path)
    if expected > actual:
        return f"{name} is cut short ({actual} bytes written; its own headers need at least {expected})"
    return f"{name} has {actual - expected} unexpected bytes after its end"
