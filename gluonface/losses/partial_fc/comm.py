"""The three collectives Partial FC needs, behind one small interface.

``HorovodComm`` runs them over ``horovod.mxnet`` (Horovod 0.28.1's MXNet ``allgather`` and ``allreduce``
with ``op=Max`` give correct results on CPU/Gloo here; the 2019 allgather bug insightface worked around,
horovod#1669, is gone). ``LocalComm`` is the single-process case (W = 1), where every collective is the
identity, so the same block runs in unit tests and in a one-worker job.

Tensor names must be identical on every rank and unique among the operations in flight, so each block
passes a fixed prefix and every call site its own suffix.
"""


class LocalComm:
    """One worker: every collective returns a copy of its input (a Function may not return its input)."""

    rank = 0
    size = 1

    def allgather(self, array, name):
        """Concatenate ``array`` of every rank along axis 0 (rank order)."""
        return array.copy()

    def allreduce(self, array, name, op="sum"):
        """Elementwise ``op`` ('sum' | 'max') of ``array`` over ranks."""
        return array.copy()


class HorovodComm:
    """Collectives over ``horovod.mxnet`` (``hvd.init()`` must have run, e.g. in ``init_dist``)."""

    def __init__(self, prefix="gluonface.pfc."):
        import horovod.mxnet as hvd
        self._hvd = hvd
        self.rank = hvd.rank()
        self.size = hvd.size()
        self._prefix = prefix

    def allgather(self, array, name):
        """Concatenate ``array`` of every rank along axis 0 (rank order); first dims may differ."""
        return self._hvd.allgather(array, name=self._prefix + name)

    def allreduce(self, array, name, op="sum"):
        """Elementwise ``op`` ('sum' | 'max') of ``array`` over ranks; a new array."""
        hvd_op = {"sum": self._hvd.Sum, "max": self._hvd.Max}[op]
        return self._hvd.allreduce(array, name=self._prefix + name, op=hvd_op)
