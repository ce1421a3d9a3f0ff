"""Items to draw verification pairs from: an identity folder tree or a packed rec."""
import os
from typing import Callable, List, Tuple

import cv2
import numpy as np

from gluonface.errors import GluonFaceError


def load_source(src: str) -> Tuple[List[str], List[int], Callable[[int], bytes]]:
    """``(identity names, identity id of each item, read(item) -> encoded bytes)`` for ``src``.

    ``read`` checks that the bytes decode, so a broken file is reported by name instead of ending up in
    the pair set.
    """
    if os.path.isdir(src) and not os.path.isfile(os.path.join(src, "train.rec")):
        from gluonface.data.lst import scan_folder
        identities, _ = scan_folder(src)
        names = [ident.name for ident in identities]
        items = [(full, k) for k, ident in enumerate(identities) for full, _ in ident.items]

        def read(i: int) -> bytes:
            with open(items[i][0], "rb") as f:
                data = f.read()
            if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None:
                raise GluonFaceError(f"{items[i][0]} does not decode as an image; fix: delete or replace it "
                                     f"(`gluonface pack` lists every such file)")
            return data
        return names, [k for _, k in items], read

    from gluonface.data.record_reader import FaceRecordReader
    ds = FaceRecordReader(src)
    names = [str(k) for k in range(ds.num_classes)]
    if os.path.isfile(ds.paths.identities):
        from gluonface.data.pack import read_identity_names
        known = read_identity_names(ds.paths.prefix)
        names[:len(known)] = known

    def read_rec(i: int) -> bytes:
        data, _ = ds.read_raw(i)
        if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None:
            raise GluonFaceError(f"{ds.paths.rec}: record {ds.record_key(i)} does not decode; fix: re-pack it")
        return data
    return names, ds.labels.tolist(), read_rec
