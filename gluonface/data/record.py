"""insightface face datasets in RecordIO: ``train.rec`` + ``train.idx`` + ``property``, read and written.

Layout (insightface ``face2rec2`` / ``FaceImageIter``): record 0 is a header whose label is ``[N+1, N+1+K]``;
images are records ``1..N`` grouped by identity; records ``N+1..N+K`` are one per identity with label
``[start, end)`` (record keys). ``property`` holds ``num_classes,H,W`` on its first line (extra lines are
tolerated). Headerless recs (record 0 is an image, or mxnet ``im2rec`` output) fall back to per-record
labels over all index keys. A vector image label ``[class, aligned]`` means class ``label[0]``.

The reading logic lives in :mod:`~gluonface.data.record_reader` and the writer in
:mod:`~gluonface.data.record_writer`, both MXNet-free so that packing and inspection start fast; this
module adds the Gluon ``Dataset`` base class.
"""
from mxnet import gluon

from gluonface.data.record_reader import FaceRecordReader, decode_image  # noqa: F401 (public API)
from gluonface.data.record_writer import RecordWriter  # noqa: F401 (public API)


class FaceRecordDataset(FaceRecordReader, gluon.data.Dataset):
    """A Gluon ``Dataset`` over an insightface rec; ``ds[i]`` → ``(HWC uint8 RGB, int label)``.

    Arguments and attributes as :class:`~gluonface.data.record_reader.FaceRecordReader` (``prefix``,
    ``min_images_per_identity``; ``num_classes``, ``image_size``, ``labels``, ``identity_ranges``, ``layout``,
    ``paths``); methods ``read_raw(i)`` → ``(encoded bytes, int label)``, ``read_record(i)`` → ``(IRHeader, bytes)``.
    """
