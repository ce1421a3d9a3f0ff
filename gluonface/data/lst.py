"""Image lists (``.lst``) in both conventions, and identity-folder trees, as ordered identity groups.

* face2rec2 (insightface): ``aligned<TAB>path<TAB>label[<TAB>...]`` (first column 0/1).
* mxnet im2rec: ``index<TAB>label[<TAB>label...]<TAB>path`` (path last, labels printed as floats).

Relative paths in a list are relative to the list's folder. A folder tree is ``root/<identity>/<images>``
(sub-folders inside an identity are included); identities are sorted by name so labels are reproducible.
"""
import os
from typing import List, NamedTuple, Tuple

from gluonface.errors import GluonFaceError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class Identity(NamedTuple):
    name: str                            # folder name, or the original label of a .lst
    items: List[Tuple[str, str]]         # (absolute path, path shown in reports), in packing order


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_lst(path: str) -> List[Identity]:
    """Parse a face2rec2 or im2rec list into identities sorted by numeric label.

    Raises:
        GluonFaceError: a line has neither layout (the message names the file, line and both layouts).
    """
    base = os.path.dirname(os.path.abspath(path))
    groups = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) >= 3 and all(_is_number(v) for v in fields[:-1]) and not _is_number(fields[-1]):
            label, rel = fields[1], fields[-1]                       # im2rec: idx, label..., path
        elif len(fields) >= 3 and fields[0].strip() in ("0", "1") and _is_number(fields[2]):
            label, rel = fields[2], fields[1]                        # face2rec2: aligned, path, label, ...
        else:
            raise GluonFaceError(
                f"{path}:{n}: cannot parse {line[:80]!r}; fix: use tab-separated 'index<TAB>label<TAB>path' "
                f"(mxnet im2rec) or 'aligned<TAB>path<TAB>label' (insightface face2rec2)")
        full = rel if os.path.isabs(rel) else os.path.join(base, rel)
        groups.setdefault(float(label), []).append((full, rel))
    if not groups:
        raise GluonFaceError(f"{path} lists no images; fix: add 'index<TAB>label<TAB>path' lines")
    return [Identity(f"{lab:g}", items) for lab, items in sorted(groups.items())]


def scan_folder(root: str) -> Tuple[List[Identity], List[Tuple[str, str]]]:
    """Identities of an identity-folder tree, and the files that are not images ``(shown path, reason)``.

    Files directly under ``root`` (e.g. ``landmarks.tsv``) are not part of any identity and are ignored.
    """
    if not os.path.isdir(root):
        raise GluonFaceError(f"{root} is not a folder or .lst file; fix: pass root/<identity>/<images> or a .lst")
    identities, not_images = [], []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        items = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for fname in sorted(filenames):
                full = os.path.join(dirpath, fname)
                shown = os.path.relpath(full, root).replace(os.sep, "/")
                if fname.lower().endswith(IMAGE_EXTENSIONS):
                    items.append((full, shown))
                else:
                    not_images.append((shown, "not an image file name (skipped by extension)"))
        identities.append(Identity(name, items))
    if not identities:
        raise GluonFaceError(f"{root} has no identity sub-folders; fix: arrange images as "
                             f"{root}/<identity>/<image>.jpg")
    return identities, not_images
