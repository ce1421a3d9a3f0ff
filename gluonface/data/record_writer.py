"""Writing insightface face datasets in RecordIO: header, images grouped by identity, identity records."""
import os
from typing import Optional, Tuple

from gluonface.data import recordio
from gluonface.data.record_paths import resolve_prefix, write_property


class RecordWriter:
    """Write an insightface rec: header, images grouped by identity, identity records, ``property``.

    Usage: ``w = RecordWriter(prefix); w.add_image(jpeg_bytes, label) ...; w.close(image_size=(H, W))``.
    Images of one identity must be added consecutively. The header is written first as a fixed-size
    placeholder and patched on ``close`` so the bytes are deterministic and record 0 is physically first.
    """

    def __init__(self, prefix):
        self.paths = resolve_prefix(prefix, must_exist=False)
        os.makedirs(os.path.dirname(self.paths.rec) or ".", exist_ok=True)
        self._w = recordio.RecordFileWriter(self.paths.rec, self.paths.idx)
        self._w.write(0, recordio.pack_payload([0.0, 0.0]))
        self._next_key = 1
        self._ranges = []          # [label, start_key, end_key)
        self._seen = set()

    @property
    def num_images(self) -> int:
        return self._next_key - 1

    def add_image(self, image: bytes, label: int) -> int:
        """Append one encoded image with class ``label``; returns its record key."""
        label = int(label)
        if self._ranges and self._ranges[-1][0] == label:
            self._ranges[-1][2] += 1
        else:
            if label in self._seen:
                raise ValueError(f"identity {label} added again after another identity; group images by identity")
            self._seen.add(label)
            self._ranges.append([label, self._next_key, self._next_key + 1])
        key = self._next_key
        self._w.write(key, recordio.pack_payload(float(label), image, id=key))
        self._next_key += 1
        return key

    def close(self, image_size: Tuple[int, int], num_classes: Optional[int] = None) -> None:
        """Write identity records, patch the header, write ``property`` (``num_classes,H,W``)."""
        n, k = self.num_images, len(self._ranges)
        for i, (_, lo, hi) in enumerate(self._ranges):
            self._w.write(n + 1 + i, recordio.pack_payload([float(lo), float(hi)]))
        self._w.close()
        header = recordio.encode_record(recordio.pack_payload([float(n + 1), float(n + 1 + k)]))
        with open(self.paths.rec, "r+b") as f:
            f.write(header)  # same length as the placeholder: 8 + 24 + 2 * 4 bytes
        if num_classes is None:
            num_classes = max(self._seen) + 1 if self._seen else 0
        write_property(self.paths.property, num_classes, image_size)
