"""``gluonface inspect``: counts and a full integrity pass over a rec, or a summary of a ``.bin`` pair set."""
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from gluonface.errors import GluonFaceError


@dataclass
class InspectReport:
    """Findings; ``problems`` lists ``(where, what)`` for every failed check (empty = healthy)."""
    kind: str                       # "rec" or "bin"
    path: str
    lines: List[str] = field(default_factory=list)
    problems: List[Tuple[str, str]] = field(default_factory=list)
    grid: Optional[str] = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self, max_problems: int = 20) -> str:
        out = list(self.lines)
        if self.problems:
            out.append(f"integrity: {len(self.problems)} problem(s)")
            out += [f"  {where}: {what}" for where, what in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                out.append(f"  ... and {len(self.problems) - max_problems} more")
        else:
            out.append("integrity: ok")
        if self.grid:
            out.append(f"contact sheet: {self.grid}")
        return "\n".join(out)


def _check_records(ds, progress: bool) -> List[Tuple[str, str]]:
    import cv2
    from tqdm import tqdm
    problems = []
    h, w = ds.image_size
    for i in tqdm(range(len(ds)), unit="rec", desc="integrity", disable=not progress):
        where = f"{ds.paths.rec} record {ds.record_key(i)}"
        try:
            header, buf = ds.read_record(i)
        except GluonFaceError as exc:
            problems.append((where, str(exc)))
            continue
        own = int(header.label if np.ndim(header.label) == 0 else header.label[0])
        if own != ds.labels[i]:
            problems.append((where, f"label {own} but its identity range says {ds.labels[i]}"))
        if not 0 <= own < ds.num_classes:
            problems.append((where, f"label {own} outside 0..{ds.num_classes - 1} (property)"))
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            problems.append((where, "does not decode as an image"))
        elif img.shape[:2] != (h, w):
            problems.append((where, f"image is {img.shape[0]}x{img.shape[1]}, property says {h}x{w}"))
    return problems


def inspect_rec(prefix: str, grid: Optional[str] = None, progress: bool = True) -> InspectReport:
    """Summarise a rec and check every record (decodes, label in range, label matches its identity range)."""
    from gluonface.data.record_reader import FaceRecordReader
    ds = FaceRecordReader(prefix)
    counts = np.array([e - s for s, e in ds.identity_ranges.values()]) if ds.identity_ranges else np.zeros(1)
    rep = InspectReport("rec", ds.paths.rec)
    rep.lines = [
        f"rec:        {ds.paths.rec} ({ds.layout} layout)",
        f"images:     {len(ds)}",
        f"identities: {len(ds.identity_ranges)} (num_classes {ds.num_classes})",
        f"per identity: min {int(counts.min())}, median {float(np.median(counts)):g}, max {int(counts.max())}",
        f"image size: {ds.image_size[0]}x{ds.image_size[1]}",
    ]
    rep.problems = _check_records(ds, progress)
    if grid:
        from gluonface.data.contact_sheet import identity_sheet
        names = ()
        if os.path.isfile(ds.paths.identities):
            from gluonface.data.pack import read_identity_names
            names = read_identity_names(ds.paths.prefix)
        identity_sheet(ds, grid, names=names)
        rep.grid = grid
    return rep


def inspect_bin(path: str, grid: Optional[str] = None) -> InspectReport:
    """Summarise a ``.bin``: pairs, positives/negatives, image size; every image must decode."""
    import cv2
    from gluonface.data.pairs import load_bin
    bins, issame = load_bin(path)
    rep = InspectReport("bin", path)
    sizes = set()
    for i, buf in enumerate(bins):
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            rep.problems.append((f"{path} image {i} (pair {i // 2})", "does not decode"))
        else:
            sizes.add(img.shape[:2])
    size_text = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)) or "none"
    rep.lines = [f"pair set:   {path}", f"pairs:      {len(issame)}",
                 f"positives:  {int(issame.sum())}", f"negatives:  {int((~issame).sum())}",
                 f"image size: {size_text}"]
    if grid:
        from gluonface.data.contact_sheet import pairs_sheet
        from gluonface.data.pairs import decode_bin
        h, w = max(sizes) if sizes else (112, 112)
        images, flags = decode_bin(path, (h, w))
        pairs_sheet(images, flags, grid)
        rep.grid = grid
    return rep


def inspect(path: str, grid: Optional[str] = None, progress: bool = True) -> InspectReport:
    """Inspect a rec (prefix, ``.rec`` or folder) or a ``.bin`` (by extension)."""
    if path.endswith(".bin"):
        if not os.path.isfile(path):
            raise GluonFaceError(f"no pair set {path}; fix: create it with `gluonface pairs SRC {path}`")
        return inspect_bin(path, grid)
    return inspect_rec(path, grid, progress)
