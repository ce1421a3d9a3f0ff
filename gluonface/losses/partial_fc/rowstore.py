"""The Partial FC centre matrix and its momentum on the parameter servers, as blocks of rows.

The ``(C, E)`` matrix is split into blocks of ``block_rows`` rows (256 MB each by default), one row-sparse
key per block plus one momentum key per block. Blocks bound what any worker ever holds at once: rank 0
initialises the servers block by block and writes a checkpoint block by block, so no worker allocates
O(C) memory even at 10^8 classes. ps-lite places a small block on one server (by key) and slices a
block above ``MXNET_KVSTORE_BIGARRAY_BOUND`` elements over all servers.

Every worker must make the same calls in the same order (``init``, ``push`` and ``bind`` are
synchronous across workers in ``dist_sync``); ``pull`` is not collective.
"""
import json
import os

import numpy as np
from mxnet import nd

from gluonface.errors import GluonFaceError
from gluonface.losses.partial_fc.shard import init_rows

BLOCK_BYTES = 256 * 2 ** 20
MARKER = 1e30
# A block below the big-array bound lives on ONE server, picked as (key * 9973) % S in C int arithmetic
# (ps-lite/MXNet kvstore_dist.h); its momentum must live on the same server, so the momentum key is the
# centre key plus lcm(1..12): the same server for any S <= 12. Keys must stay below 2^31 / 9973 or that
# product overflows. Blocks above the bound (every block but maybe the last one, at 256 MB) are sliced
# over all servers by rows, the same way for both keys, whatever S.
MOMENTUM_KEY_OFFSET = 27720
MAX_KEY = (2 ** 31 - 1) // 9973


class RowStore:
    """``(C, E)`` float32 centres + momentum on the servers of ``store``.

    Args:
        store: the job's kvstore (``dist_ctx.handle.store``); first_key: the first of ``num_blocks`` keys
        reserved for it (momentum keys are ``MOMENTUM_KEY_OFFSET`` above); rank: this worker;
        block_rows: rows per key (default: 256 MB per block).
    """

    def __init__(self, store, first_key, num_classes, embedding_size, rank, block_rows=None):
        self.num_classes, self.embedding_size, self.rank = int(num_classes), int(embedding_size), int(rank)
        self.block_rows = int(block_rows or max(1, BLOCK_BYTES // (4 * self.embedding_size)))
        self.num_blocks = -(-self.num_classes // self.block_rows)
        self.centres_keys = [first_key + b for b in range(self.num_blocks)]
        self.momentum_keys = [k + MOMENTUM_KEY_OFFSET for k in self.centres_keys]
        if self.momentum_keys[-1] > MAX_KEY:
            raise GluonFaceError(f"Partial FC needs kvstore keys up to {self.momentum_keys[-1]}, above {MAX_KEY} "
                                 "where ps-lite's server choice overflows; fix: use larger blocks (fewer keys)")
        self._store = store

    @staticmethod
    def keys_needed(num_classes, embedding_size, block_rows=None):
        """How many consecutive kvstore keys a ``RowStore`` of this size reserves (one per block)."""
        rows = int(block_rows or max(1, BLOCK_BYTES // (4 * int(embedding_size))))
        return -(-int(num_classes) // rows)

    def _shape(self, b):
        return (min(self.block_rows, self.num_classes - b * self.block_rows), self.embedding_size)

    def _split(self, rows):
        """Sorted global rows -> per block, the block-local row ids (``(k_b,)`` int64, maybe empty)."""
        edges = np.searchsorted(rows, np.arange(1, self.num_blocks) * self.block_rows)
        return [part - b * self.block_rows for b, part in enumerate(np.split(rows, edges))]

    def init(self, seed, source=None):
        """Create every key; rank 0 sends the initial values one block at a time.

        Args:
            seed: initial centres (``init_rows``) when ``source`` is None; momentum starts at 0.
            source: ``b -> (weight (rows_b, E), momentum (rows_b, E))`` NumPy/NDArray, e.g. a checkpoint.
        """
        for b in range(self.num_blocks):
            shape = self._shape(b)
            if self.rank == 0:
                if source is None:
                    w, m = nd.array(init_rows(seed, b * self.block_rows, shape[0], shape[1])), nd.zeros(shape)
                else:
                    w, m = (nd.array(a) if isinstance(a, np.ndarray) else a for a in source(b))
                values = [_all_rows(w), _all_rows(m)]
            else:      # only rank 0's value reaches the servers; the others just declare the keys
                values = [nd.sparse.zeros("row_sparse", shape), nd.sparse.zeros("row_sparse", shape)]
            self._store.init([self.centres_keys[b], self.momentum_keys[b]], values)

    def pull(self, rows, momentum=False):
        """Rows ``rows`` (sorted ``(K,)`` int64) of the centres (or momentum) as a dense ``(K, E)`` array."""
        keys = self.momentum_keys if momentum else self.centres_keys
        parts = [(b, ids) for b, ids in enumerate(self._split(rows)) if ids.size]
        outs = [nd.sparse.zeros("row_sparse", self._shape(b)) for b, _ in parts]
        self._store.row_sparse_pull([keys[b] for b, _ in parts], out=outs,
                                    row_ids=[nd.array(ids, dtype="int64") for _, ids in parts])
        return nd.concat(*[o.data for o in outs], dim=0) if len(outs) > 1 else outs[0].data.copy()

    def push(self, rows, grad):
        """Push the gradient ``grad`` ``(K, E)`` of rows ``rows``; every block gets a (maybe empty) push,
        because a sync server waits for all workers' pushes of a key."""
        values, start = [], 0
        for b, ids in enumerate(self._split(rows)):
            shape = self._shape(b)
            if ids.size:
                data = nd.slice_axis(grad, axis=0, begin=start, end=start + ids.size)
                values.append(nd.sparse.row_sparse_array((data, nd.array(ids, dtype="int64")), shape=shape))
            else:
                values.append(nd.sparse.zeros("row_sparse", shape))
            start += ids.size
        self._store.push(self.centres_keys, values)

    def bind(self):
        """Hand every server its momentum arrays (after ``set_optimizer``), and check it runs the optimizer.

        Block 0's push carries a marker: a server that failed to unpickle the optimizer (it logs the error,
        keeps running without an updater and would silently store gradient sums) copies it into the
        momentum, which the pull below then sees.
        """
        values = [nd.sparse.zeros("row_sparse", self._shape(b)) for b in range(self.num_blocks)]
        values[0] = nd.sparse.row_sparse_array((nd.full((1, self.embedding_size), MARKER),
                                                nd.array([0], dtype="int64")), shape=self._shape(0))
        self._store.push(self.momentum_keys, values)
        # a sync push completes when the servers have applied it: every block is bound before this worker
        # pushes its next gradient (to other keys, which ps-lite does not order after these)
        nd.waitall()
        if float(self.pull(np.array([0]), momentum=True)[0, 0].asscalar()) >= MARKER / 2:
            raise GluonFaceError("the parameter servers are not running the Partial FC optimizer (their log "
                                 "shows why unpickling it failed); fix: start servers with `gluonface launch` "
                                 "(python -m gluonface.parallel.server) from the same gluonface installation")

    def file_names(self):
        """Checkpoint files, one per block: ``classifier-block<b>.params`` (weight and momentum)."""
        return [f"classifier-block{b:05d}.params" for b in range(self.num_blocks)]

    def save(self, dirname, info):
        """Rank 0: write every block (pulled from the servers, one at a time) and ``classifier.json``."""
        for b, name in enumerate(self.file_names()):
            rows = np.arange(b * self.block_rows, b * self.block_rows + self._shape(b)[0], dtype=np.int64)
            nd.save(os.path.join(dirname, name), {"weight": self.pull(rows), "momentum": self.pull(rows, True)})
        with open(os.path.join(dirname, "classifier.json"), "w") as fout:
            json.dump(dict(info, shape=[self.num_classes, self.embedding_size], block_rows=self.block_rows), fout)

    def reader(self, dirname):
        """``b -> (weight, momentum)`` of a checkpoint written by ``save`` (block sizes must match)."""
        with open(os.path.join(dirname, "classifier.json")) as fin:
            info = json.load(fin)
        if tuple(info["shape"]) != (self.num_classes, self.embedding_size) or info["block_rows"] != self.block_rows:
            raise GluonFaceError(f"{dirname} holds a {tuple(info['shape'])} classifier in blocks of "
                                 f"{info['block_rows']} rows, this job needs {(self.num_classes, self.embedding_size)}"
                                 f" in blocks of {self.block_rows}; fix: resume with the same dataset and "
                                 "model.embedding_size")
        names = self.file_names()

        def read(b):
            arrays = nd.load(os.path.join(dirname, names[b]))
            return arrays["weight"], arrays["momentum"]
        return info, read


def _all_rows(dense):
    """``(rows, E)`` dense -> row-sparse with every row stored (``tostype`` would drop all-zero rows, and the
    servers size their slice from the initial value)."""
    rows = nd.arange(dense.shape[0], dtype="int64")
    return nd.sparse.row_sparse_array((dense, rows), shape=dense.shape)
