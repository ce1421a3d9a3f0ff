"""Batch-hard triplet loss against a brute-force NumPy loop, and the P×K sampler."""
import mxnet as mx
import numpy as np
import pytest

import numpy_reference as ref
from gluonface.errors import GluonFaceError
from gluonface.losses import get_loss
from gluonface.losses.triplet import PKSampler


@pytest.mark.parametrize("hybrid", [False, True])
def test_batch_hard_triplet_matches_bruteforce_values_and_gradients(hybrid):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 3)          # P=4 identities × K=3
    x = rng.normal(size=(12, 5))
    loss = get_loss("triplet", 0, 5, margin=0.4, compute_dtype="float64")
    assert not list(loss.collect_params().keys())  # no parameters
    if hybrid:
        loss.hybridize()
    xn = mx.nd.array(x, dtype="float64")
    xn.attach_grad()
    with mx.autograd.record():
        out = loss(xn, mx.nd.array(y))
    out.backward()
    want = ref.triplet_batch_hard_bruteforce(x, y, 0.4)
    assert (want > 0).sum() >= 6  # the margin is active for most anchors, so gradients are tested
    np.testing.assert_allclose(out.asnumpy(), want, rtol=1e-9, atol=1e-12)
    num = ref.numeric_grad(lambda v: ref.triplet_batch_hard_bruteforce(v, y, 0.4).sum(), x.copy())
    np.testing.assert_allclose(xn.grad.asnumpy(), num, rtol=1e-5, atol=1e-7)


def test_triplet_zero_when_identities_are_separated():
    # identities far apart on the sphere, samples tight around them → all hinges inactive
    centres = np.eye(4, 6) * 10
    x = np.repeat(centres, 2, axis=0) + 0.01 * np.random.default_rng(1).normal(size=(8, 6))
    y = np.repeat(np.arange(4), 2)
    loss = get_loss("triplet", 0, 6)
    out = loss(mx.nd.array(x), mx.nd.array(y)).asnumpy()
    assert out.dtype == np.float32 and out.shape == (8,)
    np.testing.assert_allclose(out, 0.0)
    np.testing.assert_allclose(out, ref.triplet_batch_hard_bruteforce(x, y, 0.3), atol=1e-6)


def test_pk_sampler_batches_and_determinism():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 4 + [3] * 6 + [4] * 3 + [5] * 1)
    sampler = PKSampler(labels, p=3, k=2, seed=7)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    seen = set()
    for batch in batches:
        ids = labels[batch]
        assert len(batch) == 6
        uniq, counts = np.unique(ids, return_counts=True)
        assert len(uniq) == 3 and np.all(counts == 2)
        assert not seen & set(uniq)  # identities drawn without replacement within an epoch
        seen |= set(uniq)
    assert batches == list(PKSampler(labels, p=3, k=2, seed=7))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    # an identity with fewer than K samples is sampled with replacement
    few = PKSampler(np.array([0, 1, 1, 1]), p=2, k=3, seed=0)
    (batch,) = list(few)
    assert sorted(np.array([0, 1, 1, 1])[batch].tolist()) == [0, 0, 0, 1, 1, 1]


def test_pk_sampler_rejects_bad_sizes():
    with pytest.raises(GluonFaceError, match="fix"):
        PKSampler(np.arange(10), p=1, k=2)
    with pytest.raises(GluonFaceError, match="lower p"):
        PKSampler(np.array([0, 0, 1, 1]), p=3, k=2)
