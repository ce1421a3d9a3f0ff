"""Partial FC bookkeeping: shard ranges, sampling rule, initial centres independent of the sharding."""
import numpy as np
import pytest

from gluonface.errors import GluonFaceError
from gluonface.losses.partial_fc.shard import (init_rows, num_sampled, sample_rows, shard_range,
                                               step_rng)


@pytest.mark.parametrize("num_classes,workers", [(10, 1), (10, 3), (7, 7), (100003, 64)])
def test_shards_cover_classes_once_and_are_balanced(num_classes, workers):
    ranges = [shard_range(num_classes, r, workers) for r in range(workers)]
    owner = np.concatenate([np.arange(s, s + n) for s, n in ranges])
    np.testing.assert_array_equal(owner, np.arange(num_classes))
    sizes = [n for _, n in ranges]
    assert max(sizes) == -(-num_classes // workers) and max(sizes) - min(sizes) <= 1


def test_more_workers_than_classes_is_a_user_error():
    with pytest.raises(GluonFaceError, match="fix"):
        shard_range(3, 0, 4)


def test_sample_keeps_every_positive_and_maps_targets():
    labels = np.array([12, 3, 17, 12, 25, 14])          # shard owns 10..19
    rows, target = sample_rows(labels, 10, 10, 5, step_rng(0, 0, 0))
    assert rows.size == 5 and np.all(np.diff(rows) > 0)
    assert {2, 7, 4} <= set(rows.tolist())
    inside = (labels >= 10) & (labels < 20)
    np.testing.assert_array_equal(rows[target[inside]], labels[inside] - 10)
    np.testing.assert_array_equal(target[~inside], -1)


def test_more_positives_than_budget_keeps_them_all():
    labels = np.arange(8)
    rows, target = sample_rows(labels, 0, 20, 3, step_rng(0, 0, 0))
    np.testing.assert_array_equal(rows, np.arange(8))
    np.testing.assert_array_equal(target, np.arange(8))


def test_sampling_is_a_function_of_seed_rank_step():
    labels = np.array([1, 2])
    a = sample_rows(labels, 0, 1000, 50, step_rng(3, 1, 7))[0]
    b = sample_rows(labels, 0, 1000, 50, step_rng(3, 1, 7))[0]
    c = sample_rows(labels, 0, 1000, 50, step_rng(3, 1, 8))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_num_sampled():
    assert num_sampled(100, 1.0) == 100 and num_sampled(100, 0.1) == 10 and num_sampled(3, 0.01) == 1
    with pytest.raises(GluonFaceError):
        num_sampled(10, 0.0)


def test_initial_centres_do_not_depend_on_sharding():
    full = init_rows(5, 0, 10000, 4)
    assert full.dtype == np.float32 and abs(full.std() - 0.01) < 1e-3
    for workers in (2, 3, 7):
        parts = [init_rows(5, *shard_range(10000, r, workers), 4) for r in range(workers)]
        np.testing.assert_array_equal(np.concatenate(parts), full)
    assert not np.array_equal(init_rows(6, 0, 10, 4), full[:10])
