"""``TrainLoader``: sharded, resumable, multi-process batches of NCHW float32 faces.

Order: :class:`~gluonface.data.sampler.ShardSampler` (one permutation per ``(seed, epoch)`` cut into
global batches of ``batch_size * num_parts``; part ``k`` takes slice ``k`` of each). Pixels:
:func:`~gluonface.data.batch.fill_batch`, whose augmentation randomness depends only on ``(seed, epoch,
dataset index)``. Hence ``iter_from(step)`` after a restart yields exactly the batches an uninterrupted
run would have, for any ``num_workers``.

Workers are forked processes that decode into shared-memory slots (no pickling of pixel data); the parent
copies a finished slot out and reuses it, or, with ``iter_from(step, lend=True)``, hands out the slot itself
until the consumer returns it with ``give_back`` (the training loop does this: no copy of the batch).
With ``decode_cache_mb``, decoded images are kept in a ``DecodeCache`` shared by the workers, so each
image is decoded once per run instead of once per epoch. Workers never touch MXNet.
"""
import mmap
import multiprocessing as mp
import os
import queue
from typing import Iterator, Optional, Tuple

import numpy as np

from gluonface.data.batch import DecodeCache, fill_batch
from gluonface.data.sampler import ShardSampler
from gluonface.data.transforms import AugmentConfig
from gluonface.errors import GluonFaceError

LEND_DEPTH = 3   # slots beyond the prefetch depth, for batches a lending consumer still holds


def _die_with_parent(parent):
    """Make the kernel SIGKILL this forked worker when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    A worker forked after the dist engine started holds copies of the parent's sockets (Gloo, ZeroMQ) and of
    its output pipes. Left alive after the trainer is SIGKILLed (the OOM killer's way), it kept them open:
    the peers saw no connection drop (Horovod waited for its 30 s timeout before an elastic reset) and
    horovodrun saw no end of the dead worker's output, so it never noticed the death. (The kernel ties
    the signal to the thread that forked: the loader starts its workers from the iterating thread.)"""
    import ctypes
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return   # not Linux: the parent's teardown (process group) still ends it
    if os.getppid() != parent:   # the parent died before the request took effect
        os._exit(1)


def _worker_main(dataset, cfg, seed, normalize, slots, tasks, results, cache, parent):
    # No OpenCV thread-pool calls here: cv2.setNumThreads in a forked child joins pool threads that only
    # existed in the parent and hangs forever. The parent sets the pool to one thread before forking.
    _die_with_parent(parent)
    while True:
        task = tasks.get()
        if task is None:
            return
        slot, epoch, step, indices = task
        data, label = slots[slot]
        try:
            fill_batch(dataset, indices, data, label, seed=seed, epoch=epoch, augment_cfg=cfg, normalize=normalize,
                       cache=cache)
            results.put((slot, step, None))
        except Exception as exc:  # sent to the parent, which raises it there
            results.put((slot, step, f"{type(exc).__name__}: {exc}"))


class TrainLoader:
    """Batches of one part of a sharded dataset.

    Args:
        dataset: ``FaceRecordDataset``.
        batch_size: per-part batch size.
        seed: shuffling and augmentation seed (identical on every part).
        part_index, num_parts: this part (rank) and the number of parts.
        augment: ``AugmentConfig`` or ``None`` (no augmentation at all; ``AugmentConfig()`` = random flip).
        normalize: yield ``(x − 127.5) / 128`` instead of raw 0..255 pixels.
        num_workers: decoding processes (0 = decode in the calling process).
        prefetch: batches in flight per worker.
        worker_timeout: seconds without any finished batch before the loader gives up on its workers.
        decode_cache_mb: keep decoded images in memory (shared by the workers) when the whole dataset
            needs at most this many MB (``DecodeCache.megabytes``); 0 = decode every time. Batches are
            identical either way.

    Yields ``(data (B, 3, H, W) float32 RGB, label (B,) float32)`` NumPy arrays owned by the caller.
    """

    def __init__(self, dataset, batch_size: int, *, seed: int = 0, part_index: int = 0, num_parts: int = 1,
                 augment: Optional[AugmentConfig] = None, normalize: bool = False, num_workers: int = 0,
                 prefetch: int = 2, worker_timeout: float = 600.0, decode_cache_mb: float = 0):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed, self.augment, self.normalize = seed, augment, normalize
        self.sampler = ShardSampler(len(dataset), batch_size, seed, part_index, num_parts)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        if num_workers > 0 and "fork" not in mp.get_all_start_methods():
            num_workers = 0  # shared anonymous memory needs fork; decode in-process instead
        self.num_workers = num_workers
        self.worker_timeout = worker_timeout
        h, w = dataset.image_size
        need = DecodeCache.megabytes(len(dataset), h, w)
        self.cache = DecodeCache(len(dataset), h, w) if 0 < need <= decode_cache_mb else None
        self._depth = max(1, num_workers * prefetch)         # tasks in flight
        self._nslots = self._depth + LEND_DEPTH
        self.epoch = 0
        self._procs = []
        self._inflight = 0
        self.generation = 0     # bumped by iter_from and close: an older iterator must not be resumed

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def _shape(self) -> Tuple[int, int, int, int]:
        h, w = self.dataset.image_size
        return self.batch_size, 3, h, w

    # --- workers ------------------------------------------------------------------------------------------
    def _start(self):
        shape = self._shape()
        n_data, n_label = int(np.prod(shape)) * 4, shape[0] * 4
        self._mem = mmap.mmap(-1, self._nslots * (n_data + n_label))
        self._slots = []
        for s in range(self._nslots):
            base = s * (n_data + n_label)
            data = np.frombuffer(self._mem, np.float32, int(np.prod(shape)), base).reshape(shape)
            label = np.frombuffer(self._mem, np.float32, shape[0], base + n_data)
            self._slots.append((data, label))
        # slot states: free, busy (a worker fills it), ready (filled, not yet yielded), lent (yielded with lend)
        self._free = list(range(self._nslots))
        self._ready = {}                  # step -> slot, of the current iteration
        self._lent = {}                   # data address -> slot
        import cv2
        # Before the fork, so children inherit a pool that runs everything inline (see _worker_main).
        cv2.setNumThreads(1)
        ctx = mp.get_context("fork")
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        for _ in range(self.num_workers):
            p = ctx.Process(target=_worker_main, daemon=True,
                            args=(self.dataset, self.augment, self.seed, self.normalize, self._slots,
                                  self._tasks, self._results, self.cache, os.getpid()))
            p.start()
            self._procs.append(p)

    def _get_result(self):
        waited = 0.0
        while True:
            try:
                return self._results.get(timeout=2.0)
            except queue.Empty:
                waited += 2.0
                if waited >= self.worker_timeout:
                    self.close()
                    raise RuntimeError(f"no batch from the loader workers for {waited:.0f} s; if they are stuck "
                                       f"(a forked child can block on a lock the parent held at fork time), "
                                       f"use num_workers=0")
                dead = [p for p in self._procs if not p.is_alive()]
                if dead:
                    codes = ", ".join(str(p.exitcode) for p in dead)
                    self.close()
                    raise RuntimeError(f"{len(dead)} loader worker(s) died (exit code {codes}); a worker is "
                                       f"killed by the OS when memory runs out: lower num_workers or batch_size")

    def _drain(self):
        # Tasks of an abandoned iteration may still be writing into slots: wait for them before reuse.
        while self._inflight:
            slot, _, _ = self._get_result()
            self._inflight -= 1
            self._free.append(slot)
        self._free.extend(self._ready.values())
        self._ready = {}

    def give_back(self, data) -> None:
        """Return a batch yielded by ``iter_from(..., lend=True)``: its slot may be refilled from now on.

        Call it only when nothing reads the arrays any more (for an MXNet NDArray made from them: once every
        queued operation reading it has run). Arrays that were not lent (copies, or from a closed loader) are
        ignored."""
        slot = self._lent.pop(data.__array_interface__["data"][0], None) if self._procs else None
        if slot is not None:
            self._free.append(slot)

    def close(self) -> None:
        """Stop the worker processes (they are restarted on the next iteration)."""
        self.generation += 1
        for _ in self._procs:
            try:
                self._tasks.put(None)
            except (OSError, ValueError):
                pass
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self._procs, self._inflight = [], 0
        self._lent, self._ready = {}, {}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # --- iteration ----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        return self.iter_from(0)

    def iter_from(self, step: int, lend: bool = False) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Yield batches ``step .. steps_per_epoch - 1`` of the current epoch.

        With ``lend`` (and workers), the arrays are the loader's shared buffers instead of copies: the
        consumer must not write to them and returns each batch with ``give_back(data)`` once nothing reads
        it; at most ``LEND_DEPTH`` batches can be held at once. A new iteration (or ``close``) ends the
        previous one: resuming an older iterator is an error."""
        self.generation += 1
        if not 0 <= step <= self.steps_per_epoch:
            raise GluonFaceError(f"cannot resume at step {step}: an epoch has {self.steps_per_epoch} steps; "
                                 f"fix: the checkpoint was made with another batch size or dataset")
        if self.num_workers == 0:
            return self._iter_inline(step)
        return self._iter_workers(step, lend, self.generation)

    def _iter_inline(self, step):
        epoch = self.epoch
        for s in range(step, self.steps_per_epoch):
            data = np.empty(self._shape(), np.float32)
            label = np.empty(self.batch_size, np.float32)
            fill_batch(self.dataset, self.sampler.batch(epoch, s), data, label, seed=self.seed, epoch=epoch,
                       augment_cfg=self.augment, normalize=self.normalize, cache=self.cache)
            yield data, label

    def _iter_workers(self, step, lend, generation):
        if not self._procs:
            self._start()
        self._drain()
        epoch, end = self.epoch, self.steps_per_epoch
        issued = step
        for s in range(step, end):
            if self.generation != generation:
                raise GluonFaceError("this loader iteration was ended by a newer iter_from() or close(); "
                                     "fix: take batches from the newest iterator only")
            while self._free and self._inflight < self._depth and issued < end:
                self._tasks.put((self._free.pop(), epoch, issued, self.sampler.batch(epoch, issued)))
                self._inflight += 1
                issued += 1
            while s not in self._ready:
                if not self._inflight:
                    raise GluonFaceError(f"all {self._nslots} batch buffers of the loader are lent out; fix: "
                                         f"give each lent batch back with give_back(data) (at most {LEND_DEPTH} "
                                         f"held at once)")
                slot, got_step, err = self._get_result()
                self._inflight -= 1
                if err is not None:
                    self.close()
                    raise GluonFaceError(err.split(": ", 1)[1] if err.startswith("GluonFaceError") else err)
                self._ready[got_step] = slot
            slot = self._ready.pop(s)
            data, label = self._slots[slot]
            if lend:
                self._lent[data.__array_interface__["data"][0]] = slot
                # fresh view objects: MXNet's from_numpy marks the arrays it is given read-only
                yield data.view(), label.view()
            else:
                out = (data.copy(), label.copy())
                self._free.append(slot)
                yield out
