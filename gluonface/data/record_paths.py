"""Where the files of a rec dataset live (``prefix.rec``, ``prefix.idx``, ``property``) and the property file."""
import os
from typing import NamedTuple, Optional, Tuple

from gluonface.errors import GluonFaceError


class RecordPaths(NamedTuple):
    prefix: str
    rec: str
    idx: str
    property: str
    identities: str   # name → label mapping written by the packer (``prefix.identities.tsv``)
    skipped: str      # skip report written by the packer (``prefix.skipped.tsv``)


def resolve_prefix(prefix, must_exist: bool = True) -> RecordPaths:
    """Resolve ``dir``, ``dir/train``, ``dir/train.rec`` or ``dir/train.idx`` to the dataset's file paths.

    Raises:
        GluonFaceError: ``must_exist`` and the ``.rec`` or ``.idx`` is missing (the message names the
            ``gluonface pack`` command that creates them).
    """
    prefix = os.fspath(prefix)
    if os.path.isdir(prefix) or prefix.endswith(os.sep):
        prefix = os.path.join(prefix, "train")
    for ext in (".rec", ".idx"):
        if prefix.endswith(ext):
            prefix = prefix[: -len(ext)]
    folder = os.path.dirname(prefix) or "."
    paths = RecordPaths(prefix, prefix + ".rec", prefix + ".idx", os.path.join(folder, "property"),
                        prefix + ".identities.tsv", prefix + ".skipped.tsv")
    if must_exist:
        if not os.path.isfile(paths.rec):
            raise GluonFaceError(f"no rec file {paths.rec}; fix: pack images into it with "
                                 f"`gluonface pack IMAGE_FOLDER {prefix}`")
        if not os.path.isfile(paths.idx):
            raise GluonFaceError(f"{paths.rec} has no index {paths.idx}; fix: re-pack with "
                                 f"`gluonface pack IMAGE_FOLDER {prefix}` (it writes .rec, .idx and property)")
    return paths


def read_property(path: str) -> Optional[Tuple[int, int, int]]:
    """``(num_classes, H, W)`` from the first line of ``property``; ``None`` if the file does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
    try:
        num_classes, h, w = (int(float(v)) for v in first.split(","))
    except ValueError:
        raise GluonFaceError(f"{path}: first line {first!r} is not 'num_classes,H,W'; fix: write e.g. "
                             f"'1000,112,112' or delete the file to infer it from the rec") from None
    return num_classes, h, w


def write_property(path: str, num_classes: int, image_size: Tuple[int, int]) -> None:
    """Write the one-line insightface ``property`` file ``num_classes,H,W``."""
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write(f"{int(num_classes)},{int(image_size[0])},{int(image_size[1])}\n")
