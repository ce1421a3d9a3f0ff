"""The step loop, identical for every engine: everything engine-specific is in the trainers and the context.

One step: split the worker batch over the devices, forward the backbone and the loss block under
``autograd.record``, backward, then ``trainer.step(worker_batch)`` for the backbone and the classifier.
Hooks run after each step in order; they observe the loop and never change the model, optimizer or data.

The loop never waits for MXNet's engine inside a step: a batch becomes an NDArray without a copy
(``mx.nd.array`` would wait for every queued operation first, so the engine would idle while Python
fetched and converted the next batch), and step ``k + 1`` is queued while step ``k`` computes. Before
queueing step ``k + 1`` the loop waits for step ``k``'s forward pass, which bounds the work in flight to
about two steps (memory) without starving the engine.

Batches are not copied either: the loop borrows the loader's shared buffers (``iter_from(..., lend=True)``)
and gives batch ``k`` back once step ``k + 1``'s forward pass is done. By then nothing reads it any more:
every operation that reads a batch (the copies to other devices, the forward pass, a backward pass that
needs the input) comes before the weight update of step ``k``, and step ``k + 1``'s forward pass waits for
that update (with fp16 loss scaling, a skipped update is decided by reading every gradient, which waits
for the backward pass). The loop does not ask MXNet to confirm it: ``WaitToWrite`` queues a no-op behind
every operation already queued, which would stall the loop for most of a step.
"""
from collections import deque

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from gluonface.parallel.heartbeat import Heartbeat
from gluonface.errors import GluonFaceError


class Hook:
    """Observer of a ``TrainLoop``. ``state_dict``/``load_state_dict`` ride along in checkpoints."""

    name = "hook"

    def before_train(self, loop):
        pass

    def after_step(self, loop):
        pass

    def after_train(self, loop):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class TrainLoop:
    """Run optimizer steps ``[start_step, stop_step)`` over a ``TrainLoader``.

    Attributes read by hooks: ``step`` (completed steps), ``epoch``, ``epoch_end`` (this step ended an
    epoch), ``last_losses`` (per-device ``(b,)`` float32 NDArrays of the last step, not synchronised),
    ``net``, ``loss_block``, ``trainers``, ``ctx``, ``schedule``, ``dist_ctx``, ``start_step``, ``stop_step``,
    ``heartbeat`` (``gluonface.parallel.heartbeat.Heartbeat``: the loop reports each step; hooks that pause the
    loop, checkpoints and verification, say so with ``loop.heartbeat.pausing(kind)``).
    """

    def __init__(self, net, loss_block, trainers, loader, dist_ctx, schedule, hooks=(), amp=None, heartbeat=None):
        self.net, self.loss_block, self.trainers = net, loss_block, trainers
        self.heartbeat = heartbeat if heartbeat is not None else Heartbeat()   # inert unless supervised
        self.loader, self.dist_ctx, self.schedule = loader, dist_ctx, schedule
        self.ctx = list(dist_ctx.ctx)
        self.hooks = list(hooks)
        self.amp = amp
        self.step = self.epoch = self.start_step = self.stop_step = 0
        self.epoch_end = False
        self.last_losses = []
        self._live = None   # (epoch, offset, loader generation, iterator) left by a run that stopped inside an epoch
        self._lends = hasattr(loader, "give_back")
        self._held = deque()   # data arrays of lent batches that queued steps may still read
        if loader.steps_per_epoch != schedule.steps_per_epoch:
            raise GluonFaceError(f"the loader has {loader.steps_per_epoch} steps per epoch but the schedule "
                                 f"{schedule.steps_per_epoch}; fix: build both from the same dataset and batch")

    def train_step(self, data, label):
        """One optimizer step on a worker batch: data (B, 3, H, W) float32, label (B,) float32 (NumPy or NDArray).

        NumPy batches are taken over without a copy and must not be modified afterwards (the loader hands
        out arrays the caller owns)."""
        lent = self._lends and isinstance(data, np.ndarray) and not data.flags["OWNDATA"]   # a loader buffer
        buffer = data
        data, label = as_ndarray(data, lent), as_ndarray(label, lent)
        if len(self.ctx) > 1:
            xs = gluon.utils.split_and_load(data, self.ctx, even_split=False)
            ys = gluon.utils.split_and_load(label, self.ctx, even_split=False)
        else:
            xs, ys = [data.as_in_context(self.ctx[0])], [label.as_in_context(self.ctx[0])]
        for loss in self.last_losses:   # step k's forward is done: queue step k + 1 behind its backward
            loss.wait_to_read()
        while len(self._held) >= 2:     # step k's forward is done, so step k - 1's readers are (see above)
            self.loader.give_back(self._held.popleft())
        if lent:
            self._held.append(buffer)
        with autograd.record():
            losses = [self.loss_block(self.net(x), y) for x, y in zip(xs, ys)]
            if self.amp is not None:
                scaled = self.amp.scale(losses)
        autograd.backward(scaled if self.amp is not None else losses)
        self.heartbeat.inside_step(self.step + 1)
        batch = data.shape[0]
        for trainer in self.trainers.values():
            trainer.step(batch)
        self.last_losses = losses

    def run(self, start_step, stop_step):
        """Train from ``start_step`` (completed steps, e.g. from a checkpoint) until ``stop_step``."""
        self.start_step, self.stop_step = start_step, stop_step
        self.step = start_step
        spe = self.schedule.steps_per_epoch
        for h in self.hooks:
            h.before_train(self)
        self.heartbeat.training(start_step)
        while self.step < stop_step:
            self.epoch, offset = divmod(self.step, spe)
            batches = self._batches(self.epoch, offset)
            for data, label in batches:
                self.train_step(data, label)
                self.step += 1
                self.epoch_end = self.step % spe == 0
                self.heartbeat.stepped(self.step)
                for h in self.hooks:
                    h.after_step(self)
                if self.step >= stop_step or self.epoch_end:
                    if not self.epoch_end:    # a later run(stop_step, ...) continues with the batches in flight
                        self._live = (self.epoch, self.step % spe, getattr(self.loader, "generation", 0), batches)
                    break
            else:
                if not self.epoch_end:
                    raise GluonFaceError(f"the loader stopped early in epoch {self.epoch} (step {self.step}); "
                                         "fix: check the training rec is readable (`gluonface inspect`)")
        mx.nd.waitall()
        while self._held:
            self.loader.give_back(self._held.popleft())
        for h in self.hooks:
            h.after_train(self)

    def _batches(self, epoch, offset):
        """The iterator of the previous run if it stopped exactly here, else a fresh one from the loader.

        Reusing it keeps the batches the loader workers already prepared; a fresh ``iter_from`` would drain
        and discard them (and start with an empty pipeline). Not reused when the loader was iterated or
        closed in between (``loader.generation``)."""
        live, self._live = self._live, None
        if live is not None and live[:3] == (epoch, offset, getattr(self.loader, "generation", 0)):
            return live[3]
        if live is not None:
            live[3].close()
        self.loader.set_epoch(epoch)
        return self.loader.iter_from(offset, lend=True) if self._lends else self.loader.iter_from(offset)


def as_ndarray(a, borrowed=False):
    """An NDArray on the CPU sharing ``a``'s memory (NumPy), or ``a`` itself (NDArray).

    ``mx.nd.from_numpy`` queues nothing, whereas ``mx.nd.array`` copies synchronously after waiting for
    MXNet's CPU worker to reach it (behind every queued operation). The NumPy array is marked read-only.
    An array that does not own its memory is copied first, unless ``borrowed`` (a lent loader buffer, whose
    owner keeps it unchanged until it is given back).
    """
    if isinstance(a, mx.nd.NDArray):
        return a
    a = np.asarray(a, dtype=np.float32)
    if not a.flags["C_CONTIGUOUS"] or not a.flags["WRITEABLE"] or not (a.flags["OWNDATA"] or borrowed):
        a = np.array(a, dtype=np.float32, order="C")     # a private copy MXNet may keep
    return mx.nd.from_numpy(a, zero_copy=True)
