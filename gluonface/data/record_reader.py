"""Reading insightface face datasets in RecordIO (``train.rec`` + ``train.idx`` + ``property``), without MXNet.

Layout (insightface ``face2rec2`` / ``FaceImageIter``): record 0 is a header whose label is ``[N+1, N+1+K]``;
images are records ``1..N`` grouped by identity; records ``N+1..N+K`` are one per identity with label
``[start, end)`` (record keys). ``property`` holds ``num_classes,H,W`` on its first line (extra lines are
tolerated). Headerless recs (record 0 is an image, or mxnet ``im2rec`` output) fall back to per-record
labels over all index keys. A vector image label ``[class, aligned]`` means class ``label[0]``.
"""
import os
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from gluonface.data import recordio
from gluonface.data.record_paths import RecordPaths, read_property, resolve_prefix
from gluonface.errors import GluonFaceError


def decode_image(buf: bytes) -> Optional[np.ndarray]:
    """Decode encoded bytes to ``(H, W, 3) uint8`` RGB, or ``None`` when OpenCV cannot decode them."""
    bgr = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _class_of(label) -> int:
    return int(label if np.ndim(label) == 0 else label[0])


class FaceRecordReader:
    """Random access to an insightface rec; ``ds[i]`` → ``(HWC uint8 RGB, int label)``. The MXNet-free base
    of :class:`gluonface.data.record.FaceRecordDataset` (used directly by pack/inspect/pairs tooling).

    Args:
        prefix: ``dir/train`` (reads ``dir/train.rec``, ``dir/train.idx``, ``dir/property``), the ``.rec``
            path itself, or a directory holding ``train.rec``.
        min_images_per_identity: drop identities with fewer images. Labels keep their original values
            and ``num_classes`` is unchanged, so a classifier trained on the filtered set stays aligned.

    Attributes:
        num_classes (int), image_size ``(H, W)``, labels ``(N,) int64`` in dataset order,
        identity_ranges ``{label: (start, end)}`` in dataset positions (identities are contiguous).
    """

    def __init__(self, prefix, min_images_per_identity: int = 0):
        self.paths: RecordPaths = resolve_prefix(prefix)
        self._fd = None
        self._fd_pid = None
        self._rec_size = os.path.getsize(self.paths.rec)
        try:
            keys, offsets = recordio.read_index(self.paths.idx)
        except recordio.RecordError as exc:
            raise GluonFaceError(f"{self.paths.idx} is not a RecordIO index ({exc}); fix: re-create it with "
                                 f"`gluonface pack SRC {self.paths.prefix}`") from None
        if keys.size == 0:
            raise GluonFaceError(f"{self.paths.idx} lists no records; fix: re-pack with `gluonface pack SRC "
                                 f"{self.paths.prefix}`")
        bad = np.flatnonzero(offsets >= self._rec_size)
        if bad.size:
            raise GluonFaceError(
                f"{self.paths.rec} is truncated: {self.paths.idx} lists record {keys[bad[0]]} at byte "
                f"{offsets[bad[0]]} but the file has {self._rec_size} bytes; fix: copy the file again or "
                f"re-pack with `gluonface pack SRC {self.paths.prefix}`")
        self._key_offset = dict(zip(keys.tolist(), offsets.tolist()))
        self.layout, img_keys, labels = self._read_layout(keys)
        # Identities must be contiguous for identity_ranges; a stable sort keeps the rec order within each.
        order = np.argsort(labels, kind="stable")
        img_keys, labels = img_keys[order], labels[order]
        if min_images_per_identity > 1:
            uniq, counts = np.unique(labels, return_counts=True)
            keep = np.isin(labels, uniq[counts >= min_images_per_identity])
            img_keys, labels = img_keys[keep], labels[keep]
        self._keys = img_keys
        self._offsets = np.array([self._key_offset[k] for k in img_keys.tolist()], dtype=np.int64)
        self.labels = labels
        self.identity_ranges = self._ranges(labels)
        self.num_classes, self.image_size = self._read_property(labels)

    # --- layout -------------------------------------------------------------------------------------------
    def _read_layout(self, keys: np.ndarray) -> Tuple[str, np.ndarray, np.ndarray]:
        if 0 in self._key_offset:
            header, image = self._read_key(0)
            if header.flag >= 2 and not image:
                start, stop = int(header.label[0]), int(header.label[1])
                if not 1 <= start <= stop:
                    raise GluonFaceError(f"{self.paths.rec}: header record 0 has label {header.label.tolist()}, "
                                         f"expected [N+1, N+1+K]; fix: re-pack with `gluonface pack`")
                if stop > start:
                    return ("insightface",) + self._identity_records(start, stop)
                img_keys = np.arange(1, start, dtype=np.int64)
                return "insightface-noids", img_keys, self._labels_of(img_keys)
        img_keys = np.sort(keys)
        return "headerless", img_keys, self._labels_of(img_keys)

    def _identity_records(self, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        keys, labels, prev_end = [], [], 1
        for k in range(start, stop):
            header, _ = self._read_key(k)
            lo, hi = (int(v) for v in np.ravel(header.label)[:2])
            if not (1 <= lo < hi <= start):
                raise GluonFaceError(f"{self.paths.rec}: identity record {k} has range [{lo}, {hi}) outside the "
                                     f"images 1..{start - 1}; fix: re-pack with `gluonface pack`")
            if lo < prev_end:
                raise GluonFaceError(f"{self.paths.rec}: identity record {k} range [{lo}, {hi}) overlaps the "
                                     f"previous identity; fix: re-pack with `gluonface pack`")
            prev_end = hi
            # All images of a range share the class; reading one label per identity keeps opening fast.
            cls = _class_of(self._label_at_key(lo))
            keys.append(np.arange(lo, hi, dtype=np.int64))
            labels.append(np.full(hi - lo, cls, dtype=np.int64))
        return np.concatenate(keys), np.concatenate(labels)

    def _labels_of(self, img_keys: np.ndarray) -> np.ndarray:
        return np.array([_class_of(self._label_at_key(k)) for k in img_keys.tolist()], dtype=np.int64)

    @staticmethod
    def _ranges(labels: np.ndarray) -> Dict[int, Tuple[int, int]]:
        if labels.size == 0:
            return {}
        cuts = np.flatnonzero(np.diff(labels)) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [labels.size]])
        return {int(labels[s]): (int(s), int(e)) for s, e in zip(starts, ends)}

    def _read_property(self, labels: np.ndarray) -> Tuple[int, Tuple[int, int]]:
        found = read_property(self.paths.property)
        max_label = int(labels.max()) if labels.size else -1
        if labels.size and labels.min() < 0:
            raise GluonFaceError(f"{self.paths.rec} has negative labels; fix: re-pack with `gluonface pack`")
        first = self[0][0] if len(self) else None
        if found is None:
            size = first.shape[:2] if first is not None else (0, 0)
            return max_label + 1, (int(size[0]), int(size[1]))
        num_classes, h, w = found
        if max_label >= num_classes:
            raise GluonFaceError(
                f"{self.paths.property} says {num_classes} classes but {self.paths.rec} has label {max_label}; "
                f"fix: write '{max_label + 1},{h},{w}' as its first line or re-pack with `gluonface pack`")
        if first is not None and first.shape[:2] != (h, w):
            raise GluonFaceError(
                f"{self.paths.property} says images are {h}x{w} but {self.paths.rec} holds "
                f"{first.shape[0]}x{first.shape[1]} images; fix: write "
                f"'{num_classes},{first.shape[0]},{first.shape[1]}' as its first line")
        return num_classes, (h, w)

    # --- reading ------------------------------------------------------------------------------------------
    def _fileno(self) -> int:
        # One descriptor per process: forked loader workers must not share a file position (pread anyway).
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(self.paths.rec, os.O_RDONLY)
            self._fd_pid = os.getpid()
        return self._fd

    def _fail(self, where: str, exc: Exception):
        raise GluonFaceError(f"{self.paths.rec}: cannot read {where}: {exc}; fix: the file is damaged, re-pack "
                             f"it with `gluonface pack SRC {self.paths.prefix}`") from None

    def _read_key(self, key: int):
        offset = self._key_offset[key]
        try:
            payload = recordio.read_record_at(self._fileno(), offset, self._rec_size)
            return recordio.unpack_payload(payload)
        except recordio.RecordError as exc:
            self._fail(f"record {key} (byte {offset})", exc)

    def _label_at_key(self, key: int):
        if key not in self._key_offset:
            raise GluonFaceError(f"{self.paths.idx} has no record {key} although the header refers to it; fix: "
                                 f"re-pack with `gluonface pack SRC {self.paths.prefix}`")
        try:
            return recordio.read_label_at(self._fileno(), self._key_offset[key])
        except recordio.RecordError as exc:
            self._fail(f"record {key}", exc)

    def read_raw(self, idx: int) -> Tuple[bytes, int]:
        """Encoded image bytes and int label of dataset position ``idx``."""
        key = int(self._keys[idx])
        _, image = self._read_key(key)
        return image, int(self.labels[idx])

    def read_record(self, idx: int):
        """The record of dataset position ``idx`` as stored: ``(IRHeader, encoded bytes)`` (for integrity
        checks: the header label is the record's own label, not the identity range's)."""
        return self._read_key(int(self._keys[idx]))

    def record_key(self, idx: int) -> int:
        """The rec key (record index) of dataset position ``idx``, for error messages and inspection."""
        return int(self._keys[idx])

    def __getitem__(self, idx):
        buf, label = self.read_raw(idx)
        img = decode_image(buf)
        if img is None:
            raise GluonFaceError(f"{self.paths.rec}: record {self.record_key(idx)} (position {idx}) does not "
                                 f"decode as an image; fix: re-pack with `gluonface pack SRC {self.paths.prefix}`")
        return img, label

    def __len__(self):
        return int(self._keys.size)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fd"] = state["_fd_pid"] = None
        return state

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._fd_pid == os.getpid():
            os.close(self._fd)
