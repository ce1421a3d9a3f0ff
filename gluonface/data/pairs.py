"""insightface verification pair sets (``.bin``): safe loading, writing, decoding and generation.

A ``.bin`` is a pickle of ``(bins, issame)``: ``bins`` the ``2P`` encoded images in pair order
``a0, b0, a1, b1, ...``, ``issame`` ``P`` booleans. Files written by Python 2 load with
``encoding='bytes'``. Loading uses an unpickler that admits no classes or callables except pure data
constructors (NumPy's scalar/dtype for ``numpy.bool_`` flags, ``bytearray``, and ``_codecs.encode``, which
Python 3 uses for bytes under pickle protocol 2), so a malicious file cannot run code.
"""
import io
import os
import pickle
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from gluonface.errors import GluonFaceError

# Pure data constructors only. _codecs.encode is how Python 3 pickles bytes under protocols 0-2.
_ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy", "dtype"), ("builtins", "bytearray"),
            ("__builtin__", "bytearray"), ("_codecs", "encode")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a .bin holds only bytes, lists and "
                                     f"booleans")


def load_bin(path: str) -> Tuple[List[bytes], np.ndarray]:
    """Load a ``.bin`` without executing anything: ``(bins list of 2P bytes, issame (P,) bool)``.

    Raises:
        GluonFaceError: unreadable, not a pair set, or carrying anything but the format's data.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise GluonFaceError(f"cannot read pair set {path} ({exc.strerror}); fix: check the path") from None
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise GluonFaceError(f"{path} is not a safe .bin pair set: {exc}; fix: rebuild it with `gluonface "
                             f"pairs`, never load such a file with plain pickle") from None
    except Exception as exc:
        raise GluonFaceError(f"{path} is not a .bin pair set ({type(exc).__name__}: {exc}); fix: rebuild it "
                             f"with `gluonface pairs SRC {path}`") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise GluonFaceError(f"{path} holds a {type(obj).__name__}, not (bins, issame); fix: rebuild it with "
                             f"`gluonface pairs`")
    bins, issame = obj
    bins = [bytes(b) if isinstance(b, bytearray) else b for b in bins]
    if not all(isinstance(b, bytes) for b in bins):
        raise GluonFaceError(f"{path}: the image list must hold encoded image bytes; fix: rebuild it with "
                             f"`gluonface pairs`")
    issame = np.array([bool(x) for x in issame], dtype=bool)
    if len(bins) != 2 * len(issame):
        raise GluonFaceError(f"{path}: {len(bins)} images for {len(issame)} pairs (need exactly 2 per pair); "
                             f"fix: rebuild it with `gluonface pairs`")
    return bins, issame


def save_bin(path: str, bins: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write ``(bins, issame)`` as an insightface ``.bin`` (pickle protocol 4; lists of bytes and bools)."""
    bins, flags = [bytes(b) for b in bins], [bool(x) for x in issame]
    if len(bins) != 2 * len(flags):
        raise ValueError(f"{len(bins)} images for {len(flags)} pairs")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump((bins, flags), f, protocol=4)


def decode_bin(path: str, image_size: Tuple[int, int] = (112, 112)) -> Tuple[np.ndarray, np.ndarray]:
    """Load and decode a ``.bin``: ``(images (2P, H, W, 3) uint8 RGB, issame (P,) bool)``; other sizes are
    resized to ``image_size``."""
    bins, issame = load_bin(path)
    h, w = image_size
    out = np.empty((len(bins), h, w, 3), np.uint8)
    for i, buf in enumerate(bins):
        bgr = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise GluonFaceError(f"{path}: image {i} (pair {i // 2}) does not decode; fix: rebuild the file "
                                 f"with `gluonface pairs`")
        if bgr.shape[:2] != (h, w):
            bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
        out[i] = bgr[:, :, ::-1]
    return out, issame


def sample_pairs(groups: Sequence[int], n_pairs: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Balanced pairs over items grouped by identity.

    Args:
        groups: ``(M,)`` identity id of each item.
        n_pairs: total pairs; ``n_pairs // 2`` negatives, the rest positives, in shuffled order.

    Returns:
        ``(pairs (P, 2) int64 item indices, issame (P,) bool)``; no pair repeats.
    """
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(ids))]
    multi = [m for m in members if len(m) >= 2]
    n_neg = n_pairs // 2
    n_pos = n_pairs - n_neg
    max_pos = sum(len(m) * (len(m) - 1) // 2 for m in multi)
    if n_pos > max_pos or (n_neg > 0 and len(members) < 2):
        raise GluonFaceError(f"cannot draw {n_pos} distinct positive and {n_neg} negative pairs from "
                             f"{len(members)} identities ({len(multi)} with 2+ images, {max_pos} possible "
                             f"positives); fix: ask for fewer --pairs or use more identities/images")
    chosen, pairs, flags = set(), [], []

    def draw(target, positive):
        tries = 0
        while sum(1 for f in flags if f == positive) < target:
            tries += 1
            if tries > 50 * target + 1000:
                raise GluonFaceError(f"could not find {target} distinct {'positive' if positive else 'negative'}"
                                     f" pairs; fix: ask for fewer --pairs")
            if positive:
                m = multi[rng.integers(len(multi))]
                a, b = rng.choice(m, 2, replace=False)
            else:
                ka, kb = rng.choice(len(members), 2, replace=False)
                a, b = members[ka][rng.integers(len(members[ka]))], members[kb][rng.integers(len(members[kb]))]
            key = (min(a, b), max(a, b))
            if key not in chosen:
                chosen.add(key)
                pairs.append((a, b))
                flags.append(positive)

    draw(n_pos, True)
    draw(n_neg, False)
    order = rng.permutation(len(pairs))  # mix positives and negatives so every k-fold split is balanced
    return np.asarray(pairs, np.int64)[order].reshape(-1, 2), np.asarray(flags, bool)[order]


def build_pairs(src: str, out: str, n_pairs: int, seed: int = 0,
                exclude_identities_of: Optional[str] = None) -> Tuple[int, int, int]:
    """Write a ``.bin`` of balanced pairs drawn from an identity folder tree or a rec.

    Args:
        exclude_identities_of: a packed rec prefix; identities whose names appear in its
            ``identities.tsv`` are left out (pairs of identities not used for training).

    Returns:
        ``(pairs, positives, identities used)``.
    """
    from gluonface.data.pair_sources import load_source
    names, groups, read = load_source(src)
    if exclude_identities_of:
        from gluonface.data.pack import read_identity_names
        banned = set(read_identity_names(exclude_identities_of))
        keep = np.array([names[g] not in banned for g in groups], bool)
        if not keep.any():
            raise GluonFaceError(f"every identity of {src} is also in {exclude_identities_of}; fix: generate "
                                 f"pairs from held-out identities (e.g. `gluonface synth` with another --seed)")
        index = np.flatnonzero(keep)
    else:
        index = np.arange(len(groups))
    pairs, issame = sample_pairs(np.asarray(groups)[index], n_pairs, seed)
    bins = [read(int(index[i])) for i in pairs.ravel()]
    save_bin(out, bins, issame)
    return len(issame), int(issame.sum()), len(set(np.asarray(groups)[index].tolist()))
