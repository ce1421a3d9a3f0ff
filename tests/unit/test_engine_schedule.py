"""Schedule arithmetic and the gluoncv learning-rate schedule, against hand-computed values."""
import math

import pytest

from gluonface.config import OptimConfig, TrainConfig
from gluonface.engine.schedule import make_lr_scheduler, resolve_schedule
from gluonface.errors import GluonFaceError


def test_derived_numbers():
    optim = OptimConfig(lr=0.1, base_batch=512, warmup_epochs=0.5, lr_steps=(2.0, 3.0))
    s = resolve_schedule(optim, TrainConfig(epochs=4), batch_per_device=64, num_images=10000,
                         num_devices=2, num_workers=2)
    assert s.global_batch == 256 and s.batch_per_worker == 128
    assert s.steps_per_epoch == 10000 // 256 == 39
    assert s.total_steps == 156 and s.stop_step == 156
    assert s.warmup_steps == 20  # round(0.5 * 39) = round(19.5) -> 20 (banker's rounding gives 20)
    assert s.decay_steps == (78, 117)
    assert s.lr == pytest.approx(0.1 * 256 / 512)
    s2 = resolve_schedule(OptimConfig(scale_lr=False), TrainConfig(epochs=1, max_steps=5), 8, 100)
    assert s2.lr == 0.1 and s2.stop_step == 5 and s2.total_steps == 12


def test_too_small_dataset_and_warmup_errors():
    with pytest.raises(GluonFaceError, match="fewer than one global batch.*data.batch_size"):
        resolve_schedule(OptimConfig(), TrainConfig(), 128, 100)
    with pytest.raises(GluonFaceError, match="warmup"):
        resolve_schedule(OptimConfig(warmup_epochs=2), TrainConfig(epochs=1), 10, 100)


def reference_lr(k, peak, warmup, total, mode, decay=(), factor=0.1, final=0.0, power=1.0):
    """Independent reference: lr of optimizer update k (1-based)."""
    if k < warmup:
        return peak * k / (warmup - 1)
    t = min(k - warmup, total - warmup - 1)
    n = total - warmup - 1
    if mode == "step":
        return peak * factor ** sum(1 for d in decay if d - warmup <= t)
    if mode == "cosine":
        return final + (peak - final) * (1 + math.cos(math.pi * t / n)) / 2
    if mode == "poly":
        return final + (peak - final) * (1 - t / n) ** power
    return peak


@pytest.mark.parametrize("mode", ["step", "cosine", "poly", "constant"])
def test_lr_curve_matches_reference(mode):
    optim = OptimConfig(lr=0.4, base_batch=64, schedule=mode, warmup_epochs=1.0, lr_steps=(3.0, 4.0),
                        final_lr=0.01, poly_power=2.0)
    s = resolve_schedule(optim, TrainConfig(epochs=5), 16, 160)  # 10 steps/epoch, 50 steps
    assert (s.steps_per_epoch, s.total_steps, s.warmup_steps, s.lr) == (10, 50, 10, 0.1)
    sched = make_lr_scheduler(optim, s)
    for k in range(1, 60):
        want = reference_lr(k, 0.1, 10, 50, mode, s.decay_steps, 0.1, 0.01, 2.0)
        assert sched(k) == pytest.approx(want, rel=1e-9, abs=1e-12), k
    assert sched(9) == pytest.approx(0.1)  # warmup ends at the peak
    if mode == "step":
        assert sched(29) == pytest.approx(0.1) and sched(30) == pytest.approx(0.01)


def test_scheduler_pickles_by_reference():
    """Parameter servers unpickle the optimizer: the schedule must come from an importable module."""
    import pickle
    s = resolve_schedule(OptimConfig(schedule="cosine"), TrainConfig(epochs=1), 4, 40)
    sched = make_lr_scheduler(OptimConfig(schedule="cosine"), s)
    blob = pickle.dumps(sched)
    assert b"gluoncv.utils.lr_scheduler" in blob and b"__main__" not in blob
    assert pickle.loads(blob)(3) == sched(3)
