"""Schedule arithmetic: global batch, steps per epoch, the scaled learning rate, warmup and decay steps.

Everything is expressed in optimizer steps. The learning-rate schedule is a gluoncv ``LRSequential``
(linear warmup from 0, then constant / step / cosine / poly), built here so it is importable by name when an
optimizer is pickled to parameter servers.
"""
from dataclasses import asdict, dataclass
from typing import Tuple

from gluonface.errors import GluonFaceError


@dataclass(frozen=True)
class Schedule:
    """Derived numbers of a run (saved under ``derived:`` in the run's config.yaml).

    ``total_steps`` is the length of the learning-rate schedule (``epochs × steps_per_epoch``); ``stop_step``
    is where this run stops (``train.max_steps`` when set, else ``total_steps``).
    """
    num_images: int
    num_devices: int
    num_workers: int
    batch_per_worker: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    stop_step: int
    lr: float
    warmup_steps: int
    decay_steps: Tuple[int, ...]

    def as_dict(self):
        d = asdict(self)
        d["decay_steps"] = list(self.decay_steps)
        return d


def resolve_schedule(optim, train, batch_per_device, num_images, num_devices=1, num_workers=1):
    """Compute the derived numbers of a run.

    Args:
        optim: ``OptimConfig`` (lr, base_batch, scale_lr, warmup_epochs, lr_steps).
        train: ``TrainConfig`` (epochs, max_steps).
        batch_per_device: images per device per step (``data.batch_size``).
        num_images: images in the (filtered) training set.
        num_devices: devices in each worker process; num_workers: worker processes.
    Returns:
        ``Schedule``. ``steps_per_epoch = num_images // global_batch`` (the loader drops the remainder so that
        every worker runs the same number of steps).
    """
    batch_per_worker = batch_per_device * num_devices
    global_batch = batch_per_worker * num_workers
    steps_per_epoch = num_images // global_batch
    if steps_per_epoch < 1:
        raise GluonFaceError(
            f"the training set has {num_images} images, fewer than one global batch of {global_batch} "
            f"({batch_per_device} per device × {num_devices} devices × {num_workers} workers); fix: lower "
            "data.batch_size or use fewer devices/workers")
    total = max(1, int(round(train.epochs * steps_per_epoch)))
    warmup = int(round(optim.warmup_epochs * steps_per_epoch))
    if warmup >= total:
        raise GluonFaceError(
            f"optim.warmup_epochs={optim.warmup_epochs} gives {warmup} warmup steps, not fewer than the "
            f"{total} steps of train.epochs={train.epochs}; fix: shorten the warmup or train longer")
    decay = tuple(int(round(e * steps_per_epoch)) for e in optim.lr_steps) if optim.schedule == "step" else ()
    lr = optim.lr * global_batch / optim.base_batch if optim.scale_lr else optim.lr
    stop = min(train.max_steps, total) if train.max_steps > 0 else total
    return Schedule(num_images=num_images, num_devices=num_devices, num_workers=num_workers,
                    batch_per_worker=batch_per_worker, global_batch=global_batch, steps_per_epoch=steps_per_epoch,
                    total_steps=total, stop_step=stop, lr=lr, warmup_steps=warmup, decay_steps=decay)


def make_lr_scheduler(optim, schedule, lr=None):
    """gluoncv ``LRSequential``: lr at optimizer update k (1-based, MXNet's ``num_update``).

    Args:
        optim: ``OptimConfig`` (schedule, lr_factor, poly_power, final_lr).
        schedule: ``Schedule`` from ``resolve_schedule``.
        lr: peak learning rate (default ``schedule.lr``).
    """
    from gluoncv.utils import LRScheduler, LRSequential
    peak = schedule.lr if lr is None else lr
    parts = []
    if schedule.warmup_steps > 0:
        parts.append(LRScheduler("linear", base_lr=0.0, target_lr=peak, niters=schedule.warmup_steps))
    # gluoncv divides by (niters - 1): keep at least 2 so a one-step main phase stays defined.
    main_iters = max(2, schedule.total_steps - schedule.warmup_steps)
    if optim.schedule == "step":
        main = LRScheduler("step", base_lr=peak, niters=main_iters, step_factor=optim.lr_factor,
                           step_iter=[s - schedule.warmup_steps for s in schedule.decay_steps])
    elif optim.schedule == "constant":
        main = LRScheduler("constant", base_lr=peak, niters=main_iters)
    else:
        main = LRScheduler(optim.schedule, base_lr=peak, target_lr=optim.final_lr, niters=main_iters,
                           power=optim.poly_power)
    parts.append(main)
    seq = LRSequential(parts)
    seq.base_lr = peak      # what MXNet's Optimizer compares with learning_rate (else it warns)
    return seq
