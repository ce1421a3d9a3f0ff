"""Partial FC bookkeeping in NumPy: which class centres a rank owns and which of them a step uses.

Pure functions, shared by the Horovod and the parameter-server engines, so that the sampling rule
(every positive class of the batch is kept, negatives are drawn without replacement up to a fixed count)
is the same on both and can be unit-tested without any collective.
"""
import math

import numpy as np

from gluonface.errors import GluonFaceError


def shard_range(num_classes, rank, num_workers):
    """The contiguous block of classes owned by ``rank``: balanced, sizes differ by at most one.

    Args:
        num_classes: C, total number of identities.
        rank: this worker, in ``[0, num_workers)``.
        num_workers: W.
    Returns:
        ``(start, num_local)``: rank owns classes ``start .. start + num_local - 1``; the largest shard has
        ``ceil(C / W)`` classes.
    """
    if num_classes < num_workers:
        raise GluonFaceError(f"Partial FC needs at least one class per worker (C={num_classes}, "
                             f"W={num_workers}); fix: use fewer workers or loss.partial_fc=false")
    base, extra = divmod(int(num_classes), int(num_workers))
    num_local = base + (1 if rank < extra else 0)
    start = rank * base + min(rank, extra)
    return start, num_local


def num_sampled(num_rows, sample_rate):
    """How many centres a step uses out of ``num_rows`` (at least 1): ``ceil(sample_rate * num_rows)``."""
    if not 0.0 < sample_rate <= 1.0:
        raise GluonFaceError(f"loss.sample_rate={sample_rate} must be in (0, 1]; fix: e.g. 0.1 or 1.0")
    return max(1, min(int(num_rows), int(math.ceil(sample_rate * num_rows - 1e-9))))


def sample_rows(labels, start, num_local, num_sample, rng):
    """Pick the centres of one step: all positives of ``labels`` in this shard plus random negatives.

    Args:
        labels: ``(N,)`` int64 global class ids of the (global) batch.
        start, num_local: this shard (see ``shard_range``).
        num_sample: rows to use when it exceeds the positives; with ``num_sample >= num_local`` every
            row is used (no sampling, the exact softmax).
        rng: ``numpy.random.Generator`` (the caller seeds it per step so resume is exact).
    Returns:
        ``(rows, target)``: ``rows`` ``(K,)`` int64 sorted shard-local row ids with
        ``K = max(num_sample, #positives)`` (capped at ``num_local``); ``target`` ``(N,)`` int64, for each
        sample the column of its class in ``rows``, or -1 when its class lives in another shard.
    """
    labels = np.asarray(labels, dtype=np.int64)
    local = labels - start
    inside = (local >= 0) & (local < num_local)
    if num_sample >= num_local:
        rows = np.arange(num_local, dtype=np.int64)
    else:
        positives = np.unique(local[inside])
        need = num_sample - positives.size
        if need > 0:
            # num_sample distinct rows in random order, positives dropped: a uniform draw of negatives in
            # O(num_sample) memory, with no mask over the shard (10^8 rows on parameter servers)
            drawn = rng.choice(num_local, size=num_sample, replace=False)
            negatives = drawn[~np.isin(drawn, positives)][:need]
            rows = np.sort(np.concatenate([positives, negatives.astype(np.int64)]))
        else:
            rows = positives
    target = np.full(labels.shape, -1, dtype=np.int64)
    target[inside] = np.searchsorted(rows, local[inside])
    return rows, target


def step_rng(seed, rank, step):
    """The sampling generator of one (rank, step): a pure function, so a resumed run draws the same rows."""
    return np.random.default_rng([int(seed), int(rank), int(step)])


INIT_BLOCK = 4096   # rows drawn per generator: the initial matrix does not depend on how it is sharded


def init_rows(seed, start, count, embedding_size, std=0.01):
    """Initial class centres ``start .. start + count - 1`` of the full ``(C, E)`` matrix, N(0, std²).

    Row ``i`` depends only on ``(seed, i)``: a 1-worker and a W-worker job (either engine) start from the
    same matrix, and no worker ever draws more than its own rows.

    Returns:
        ``(count, E)`` float32.
    """
    out = np.empty((int(count), int(embedding_size)), dtype=np.float32)
    first_block, last_block = start // INIT_BLOCK, (start + count - 1) // INIT_BLOCK
    for block in range(first_block, last_block + 1 if count else first_block):
        rows = np.random.default_rng([int(seed), 0xC1A55, block]).normal(
            0.0, std, size=(INIT_BLOCK, embedding_size)).astype(np.float32)
        lo, hi = max(start, block * INIT_BLOCK), min(start + count, (block + 1) * INIT_BLOCK)
        out[lo - start:hi - start] = rows[lo - block * INIT_BLOCK:hi - block * INIT_BLOCK]
    return out
