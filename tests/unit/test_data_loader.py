"""TrainLoader: sharding, exact resume, worker-count independence, pixels and errors (real processes)."""
import cv2
import numpy as np
import pytest

from gluonface.data.loader import TrainLoader
from gluonface.data.record import FaceRecordDataset, RecordWriter
from gluonface.data.sampler import ShardSampler, epoch_permutation
from gluonface.data.transforms import AugmentConfig
from gluonface.errors import GluonFaceError

STRONG = AugmentConfig(flip=True, rotate_deg=15, random_crop_scale=(0.7, 1.0), brightness=0.3,
                       contrast=0.3, saturation=0.3)


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rec")
    rng = np.random.default_rng(0)
    w = RecordWriter(str(folder / "train"))
    images = []
    for cls in range(7):
        for _ in range(5 + cls % 3):
            img = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
            images.append(img)
            w.add_image(cv2.imencode(".png", img[:, :, ::-1])[1].tobytes(), cls)
    w.close(image_size=(16, 12))
    return str(folder / "train"), images


def _epoch(loader, epoch, start=0):
    loader.set_epoch(epoch)
    return list(loader.iter_from(start))


def test_shards_are_equal_disjoint_and_reshuffled_per_epoch():
    parts = [ShardSampler(103, 4, seed=5, part_index=k, num_parts=3) for k in range(3)]
    assert {p.steps_per_epoch for p in parts} == {103 // 12}
    e0 = [np.concatenate([p.batch(0, s) for s in range(p.steps_per_epoch)]) for p in parts]
    allidx = np.concatenate(e0)
    assert len(set(allidx.tolist())) == len(allidx) == 8 * 12
    e1 = np.concatenate([parts[0].batch(1, s) for s in range(8)])
    assert not np.array_equal(e0[0], e1)
    again = ShardSampler(103, 4, seed=5, part_index=0, num_parts=3)
    np.testing.assert_array_equal(again.batch(0, 3), parts[0].batch(0, 3))


def test_step_s_is_global_batch_s_of_the_permutation_and_part_k_its_kth_slice():
    b, p = 4, 3
    parts = [ShardSampler(103, b, seed=5, part_index=k, num_parts=p) for k in range(p)]
    for epoch in (0, 1):
        perm = epoch_permutation(103, 5, epoch)
        for s in range(parts[0].steps_per_epoch):
            for k, part in enumerate(parts):
                np.testing.assert_array_equal(part.batch(epoch, s), perm[s * b * p + k * b:s * b * p + (k + 1) * b])


def test_batches_hold_the_decoded_pixels_and_labels(rec):
    prefix, images = rec
    ds = FaceRecordDataset(prefix)
    loader = TrainLoader(ds, 4, seed=1)
    loader.set_epoch(2)
    data, label = next(iter(loader))
    assert data.shape == (4, 3, 16, 12) and data.dtype == np.float32 and label.dtype == np.float32
    for j, idx in enumerate(loader.sampler.batch(2, 0)):
        np.testing.assert_array_equal(data[j], images[idx].transpose(2, 0, 1).astype(np.float32))
        assert label[j] == ds.labels[idx]
    norm = TrainLoader(ds, 4, seed=1, normalize=True)
    norm.set_epoch(2)
    np.testing.assert_allclose(next(iter(norm))[0], (data - 127.5) / 128, rtol=1e-6)


def test_worker_count_does_not_change_batches_and_resume_is_exact(rec):
    ds = FaceRecordDataset(rec[0])
    inline = TrainLoader(ds, 5, seed=3, augment=STRONG, num_workers=0)
    pooled = TrainLoader(ds, 5, seed=3, augment=STRONG, num_workers=2)
    try:
        a, b = _epoch(inline, 4), _epoch(pooled, 4)
        assert len(a) == len(b) == inline.steps_per_epoch == len(ds) // 5
        for (da, la), (db, lb) in zip(a, b):
            np.testing.assert_array_equal(da, db)
            np.testing.assert_array_equal(la, lb)
        tail = _epoch(pooled, 4, start=3)
        for (da, _), (dt, _) in zip(a[3:], tail):
            np.testing.assert_array_equal(da, dt)
        it = iter(pooled)  # abandon an iteration half-way; the next one must be unaffected
        next(it)
        del it
        for (da, _), (dc, _) in zip(a, _epoch(pooled, 4)):
            np.testing.assert_array_equal(da, dc)
        assert not np.array_equal(a[0][0], _epoch(inline, 5)[0][0])
    finally:
        pooled.close()


def test_parts_see_the_global_batches_of_one_process_split_over_devices(rec):
    """P=2 parts of batch B == one process of batch 2B split with split_and_load (slice k → device k)."""
    import mxnet as mx
    ds = FaceRecordDataset(rec[0])
    b = 3
    single = TrainLoader(ds, 2 * b, seed=7, augment=STRONG)
    parts = [TrainLoader(ds, b, seed=7, augment=STRONG, part_index=k, num_parts=2, num_workers=k)
             for k in range(2)]
    try:
        assert {p.steps_per_epoch for p in parts} == {single.steps_per_epoch} == {len(ds) // (2 * b)}
        for epoch in (0, 1):
            whole = _epoch(single, epoch)
            by_part = [_epoch(p, epoch) for p in parts]
            assert len(whole) == single.steps_per_epoch
            for s, (data, label) in enumerate(whole):
                np.testing.assert_array_equal(np.concatenate([bp[s][0] for bp in by_part]), data)
                np.testing.assert_array_equal(np.concatenate([bp[s][1] for bp in by_part]), label)
                on_devices = mx.gluon.utils.split_and_load(data, [mx.cpu(0), mx.cpu(1)])
                for k in range(2):
                    np.testing.assert_array_equal(on_devices[k].asnumpy(), by_part[k][s][0])
            seen = [np.concatenate([p.sampler.batch(epoch, s) for s in range(p.steps_per_epoch)]) for p in parts]
            assert not set(seen[0].tolist()) & set(seen[1].tolist())
        # resume mid-epoch on one part still matches the single process
        tail = _epoch(parts[1], 1, start=2)
        for s, (data, _) in enumerate(_epoch(single, 1)[2:]):
            np.testing.assert_array_equal(tail[s][0], data[b:])
    finally:
        parts[1].close()


def test_parts_cover_disjoint_samples(rec):
    ds = FaceRecordDataset(rec[0])
    seen = []
    for k in range(2):
        loader = TrainLoader(ds, 3, seed=0, part_index=k, num_parts=2)
        assert loader.steps_per_epoch == len(ds) // 6
        loader.set_epoch(0)
        seen.append(np.concatenate([loader.sampler.batch(0, s) for s in range(loader.steps_per_epoch)]))
    assert not set(seen[0].tolist()) & set(seen[1].tolist())


def test_bad_record_in_a_worker_surfaces_as_a_named_error(tmp_path):
    w = RecordWriter(str(tmp_path / "train"))
    good = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    for i in range(6):
        w.add_image(good if i != 4 else b"garbage", i // 3)
    w.close(image_size=(8, 8))
    ds = FaceRecordDataset(str(tmp_path / "train"))
    loader = TrainLoader(ds, 6, num_workers=1)
    try:
        with pytest.raises(GluonFaceError, match=r"train\.rec: record 5 \(position 4\) does not decode"):
            list(loader)
    finally:
        loader.close()
    with pytest.raises(GluonFaceError, match="cannot resume at step 9"):
        TrainLoader(ds, 6).iter_from(9)
    with pytest.raises(GluonFaceError, match="cannot fill one batch"):
        TrainLoader(ds, 4, num_parts=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_decode_cache_gives_the_same_batches_and_decodes_each_image_once(rec, workers, monkeypatch):
    prefix, _ = rec
    ds = FaceRecordDataset(prefix)
    plain = TrainLoader(ds, 4, seed=2, augment=STRONG, num_workers=workers)
    cached = TrainLoader(ds, 4, seed=2, augment=STRONG, num_workers=workers, decode_cache_mb=1)
    assert plain.cache is None and cached.cache is not None
    try:
        for epoch in (0, 1, 2):       # epoch 0 fills the cache, later epochs read it (new flips and crops)
            for (a, la), (b, lb) in zip(_epoch(plain, epoch), _epoch(cached, epoch)):
                np.testing.assert_array_equal(a, b)
                np.testing.assert_array_equal(la, lb)
        seen = np.unique(np.concatenate([cached.sampler.batch(e, s) for e in (0, 1, 2)
                                         for s in range(cached.steps_per_epoch)]))
        assert cached.cache.filled[seen].all()      # filled by the workers, visible to the parent
        # once filled, nothing is read from the rec any more
        monkeypatch.setattr(type(ds), "read_raw", lambda self, idx: pytest.fail(f"decoded {idx} again"))
        inline = TrainLoader(ds, 4, seed=2, augment=STRONG, num_workers=0, decode_cache_mb=1)
        inline.cache = cached.cache
        inline.set_epoch(1)
        inline.sampler = cached.sampler
        steps = [s for s in range(inline.steps_per_epoch) if cached.cache.filled[inline.sampler.batch(1, s)].all()]
        assert steps
        for s in steps:
            next(inline.iter_from(s))
    finally:
        plain.close()
        cached.close()


def test_decode_cache_is_off_when_the_dataset_does_not_fit(rec):
    prefix, _ = rec
    ds = FaceRecordDataset(prefix)
    need_mb = len(ds) * (16 * 12 * 3 + 9) / 2 ** 20
    assert TrainLoader(ds, 4, decode_cache_mb=need_mb * 0.99).cache is None
    assert TrainLoader(ds, 4, decode_cache_mb=need_mb).cache is not None



def test_lent_batches_equal_copied_ones_and_the_buffers_are_bounded(rec):
    """iter_from(lend=True) yields the loader's own buffers, with the same pixels as copies. Holding more
    than LEND_DEPTH without give_back is a named error (not a hang); a superseded iterator refuses to go on."""
    from gluonface.data.loader import LEND_DEPTH
    prefix, _ = rec
    ds = FaceRecordDataset(prefix)
    copied = _epoch(TrainLoader(ds, 4, seed=3, augment=STRONG, num_workers=2), 1)
    loader = TrainLoader(ds, 4, seed=3, augment=STRONG, num_workers=2)
    loader.set_epoch(1)
    lent = []
    for data, label in loader.iter_from(0, lend=True):
        assert not data.flags["OWNDATA"]
        lent.append((data.copy(), label.copy()))
        loader.give_back(data)
    assert len(lent) == len(copied)
    for (a, b), (c, d) in zip(lent, copied):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    loader.give_back(np.zeros((4, 3, 16, 12), np.float32))      # not lent: ignored
    it = loader.iter_from(0, lend=True)
    held = [next(it) for _ in range(LEND_DEPTH)]
    with pytest.raises(GluonFaceError, match="lent out"):
        for _ in range(loader.steps_per_epoch):
            held.append(next(it))
    for data, _ in held:
        loader.give_back(data)
    old = loader.iter_from(0, lend=True)
    next(old)
    newer = loader.iter_from(0)
    next(newer)
    with pytest.raises(GluonFaceError, match="newer iter_from"):
        next(old)
    loader.close()
