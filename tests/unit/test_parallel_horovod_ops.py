"""horovod_ops' broadcasts, rank by rank, against a stand-in Horovod whose allreduce sums what the ranks sent.

Rank 0 runs first and its allreduces record what it sent; rank 1's allreduces then add those words to its
own (zeros), which is what Horovod's Sum does for two ranks. The real two-rank run is in
tests/distributed/test_horovod_broadcast.py; these cover the windowing over chunks and odd dtypes fast.
"""
import mxnet as mx
import numpy as np
import pytest

from gluonface.parallel.horovod_ops import broadcast_arrays, broadcast_object


class Rank:
    Sum = "sum"

    def __init__(self, rank, wire):
        self._rank, self.wire, self.names = rank, wire, []

    def rank(self):
        return self._rank

    def allreduce_(self, words, op, name):
        assert op == self.Sum and words.dtype == np.int32
        self.names.append(name)
        if self._rank == 0:
            self.wire[name] = words.asnumpy()
        else:
            words[:] = words + mx.nd.array(self.wire[name], dtype="int32")


def _arrays(seed):
    rng = np.random.default_rng(seed)
    return [mx.nd.array(rng.standard_normal((3, 5)).astype(np.float32)),
            np.array([-0.0, np.nan, np.inf, 1e-45], np.float32) * (seed + 1),
            rng.integers(-9, 9, 7).astype(np.int64),
            np.zeros((0, 4), np.float16),
            rng.standard_normal(3).astype(np.float16),
            np.array([seed], np.uint8),
            mx.nd.array(rng.standard_normal((2, 2)), dtype="float64")]


@pytest.mark.parametrize("chunk", [4, 12, 64, 1 << 20])
def test_rank1_receives_rank0s_bytes_in_any_chunking(chunk):
    wire = {}
    r0, r1 = Rank(0, wire), Rank(1, wire)
    sent, mine = _arrays(0), _arrays(1)
    got0 = broadcast_arrays(r0, sent, "p", chunk_bytes=chunk)
    got1 = broadcast_arrays(r1, mine, "p", chunk_bytes=chunk)
    assert r0.names == r1.names and len(r0.names) == -(-sum(g.nbytes for g in got0) // max(4, chunk))
    for a, g0, g1 in zip(sent, got0, got1):
        host = a.asnumpy() if isinstance(a, mx.nd.NDArray) else a
        assert g0.dtype == g1.dtype == host.dtype and g0.shape == g1.shape == host.shape
        assert g0.tobytes() == g1.tobytes() == host.tobytes()
    assert np.signbit(got1[1][0]) and np.isnan(got1[1][1])


def test_nothing_to_send_issues_no_op():
    r1 = Rank(1, {})
    got = broadcast_arrays(r1, [np.zeros((0,), np.float32)], "p")
    assert got[0].shape == (0,) and r1.names == []


def test_objects_arrive_whole():
    wire = {}
    big = {"step": 7, "blob": bytes(range(256)) * 100, "nested": [1.5, None, ("a", -0.0)]}
    assert broadcast_object(Rank(0, wire), big, "state") is big
    assert broadcast_object(Rank(1, wire), {"other": 1}, "state") == big
