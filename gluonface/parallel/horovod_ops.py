"""Broadcasts over Horovod built on ``allreduce``, because Horovod 0.28.1's own broadcast can crash a rank.

Horovod 0.28.1's ``EnqueueTensorBroadcast`` (horovod/common/operations.cc) puts the op in the tensor queue and
then logs its name through a reference into the MXNet op's parameters. If the background thread completes the
op in between (the peers were already waiting, and the enqueuing engine thread was preempted for about a
cycle), MXNet has freed those parameters and the log reads a freed ``std::string``: ``Segmentation fault: 11``
in a rank's first broadcasts, about once in 100 two-worker starts on a loaded 2-core machine. The same
pattern is in ``broadcast_object`` (two broadcasts), alltoall and join. ``allreduce`` and ``allgather`` log
before they enqueue, so they are safe.

So gluonface issues no Horovod broadcast: rank ``root``'s bytes are summed with zeros from every other rank,
as integers, which reproduces them bit for bit (signed zeros and NaN payloads included). One op per 64 MiB;
its cost is an allreduce of the same bytes (about twice a broadcast's traffic, paid at start-up and on
an elastic reset only). ``tests/distributed/test_horovod_broadcast.py`` widens the race window and shows
Horovod's broadcast crash where these do not.
"""
import pickle

import mxnet as mx
import numpy as np


CHUNK_BYTES = 64 << 20   # one allreduce per 64 MiB: a large classifier never needs a second full copy at once


def broadcast_arrays(hvd, arrays, name, root_rank=0, chunk_bytes=CHUNK_BYTES):
    """Rank ``root_rank``'s values of ``arrays`` on every rank, exact to the bit.

    Args:
        hvd: the imported ``horovod.mxnet`` module, after ``hvd.init()``.
        arrays: list of ``NDArray`` or NumPy arrays, any dtypes; the same shapes and dtypes on every rank
            (non-root values are ignored). An ``NDArray`` in oneDNN's blocked layout is read in plain layout.
        name: Horovod op name prefix, identical on every rank and unique among ops in flight.
        root_rank: the rank whose values everyone receives.
        chunk_bytes: the arrays' bytes travel as consecutive allreduces of at most this many bytes.
    Returns:
        list of NumPy arrays (shapes and dtypes of ``arrays``); the root gets copies of its own values.
    """
    is_root = hvd.rank() == root_rank
    out = [np.empty(tuple(a.shape), np.dtype(a.dtype)) for a in arrays]
    flat = [o.reshape(-1).view(np.uint8) for o in out]
    if is_root:
        for a, f in zip(arrays, flat):
            host = a.asnumpy() if isinstance(a, mx.nd.NDArray) else np.asarray(a)
            f[:] = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
    total = sum(f.size for f in flat)
    chunk_bytes = max(4, chunk_bytes // 4 * 4)
    for k, start in enumerate(range(0, total, chunk_bytes)):
        stop = min(total, start + chunk_bytes)
        buf = np.zeros(-(-(stop - start) // 4) * 4, dtype=np.uint8)   # int32 words: a quarter of the elements
        if is_root:
            for f, lo, hi, at in _segments(flat, start, stop):
                buf[at:at + hi - lo] = f[lo:hi]
        words = mx.nd.array(buf.view(np.int32), dtype="int32")
        hvd.allreduce_(words, op=hvd.Sum, name=f"{name}.{k}")
        # every rank waits, the root too: a caller may reuse ``name`` as soon as this returns, and Horovod
        # refuses a name that is still in flight
        words.wait_to_read()
        if not is_root:
            got = words.asnumpy().view(np.uint8)
            for f, lo, hi, at in _segments(flat, start, stop):
                f[lo:hi] = got[at:at + hi - lo]
    return out


def _segments(flat, start, stop):
    """``(array, lo, hi, at)``: bytes ``[lo, hi)`` of each array in ``flat`` that fall in ``[start, stop)`` of
    their concatenation, ``at`` = where they start in that window."""
    offset = 0
    for f in flat:
        lo, hi = max(start, offset), min(stop, offset + f.size)
        if lo < hi:
            yield f, lo - offset, hi - offset, lo - start
        offset += f.size
        if offset >= stop:
            return


def broadcast_object(hvd, obj, name, root_rank=0):
    """Rank ``root_rank``'s ``obj`` on every rank (pickled; other ranks' ``obj`` is ignored).

    Args:
        hvd: ``horovod.mxnet`` after ``hvd.init()``.
        obj: a picklable object on the root.
        name: Horovod op name prefix, identical on every rank.
        root_rank: the sending rank.
    Returns:
        the root's object (the root gets ``obj`` itself).
    """
    is_root = hvd.rank() == root_rank
    payload = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) if is_root \
        else None
    length = np.array([payload.size if is_root else 0], dtype=np.int64)
    (length,) = broadcast_arrays(hvd, [length], f"{name}.size", root_rank)
    if not is_root:
        payload = np.zeros(int(length[0]), dtype=np.uint8)
    (payload,) = broadcast_arrays(hvd, [payload], f"{name}.bytes", root_rank)
    return obj if is_root else pickle.loads(payload.tobytes())
