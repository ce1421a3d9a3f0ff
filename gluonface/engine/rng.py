"""Random-number state of a training process, captured into and restored from checkpoints.

NumPy and Python states are saved as they are. MXNet 1.9.1 cannot export its generator state, so the
engine re-seeds MXNet from ``(seed, step, rank)`` at every checkpoint step, in uninterrupted and resumed runs
alike: dropout masks after a checkpoint are then the same in both (data order and augmentation never use
these generators; they are a pure function of ``(seed, epoch, index)`` in the loader).
"""
import random

import numpy as np


def mxnet_seed_for(seed, step, rank):
    """Deterministic 31-bit seed for MXNet's generators after checkpoint ``step`` on ``rank``."""
    return (int(seed) * 1000003 + int(step) * 7919 + int(rank) * 104729) % (2 ** 31 - 1)


def reseed_mxnet(seed, step, rank):
    import mxnet as mx
    mx.random.seed(mxnet_seed_for(seed, step, rank))


def capture_rng(seed, step, rank):
    """JSON-able dict of this process's RNG states (call right after ``reseed_mxnet(seed, step, rank)``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "numpy": {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "mxnet": {"seed": mxnet_seed_for(seed, step, rank), "reseeded_at_step": int(step)},
    }


def restore_rng(state, seed, step, rank):
    """Restore NumPy/Python states from ``capture_rng`` output (if given) and re-seed MXNet for ``step``."""
    if state:
        n = state["numpy"]
        np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    reseed_mxnet(seed, step, rank)
