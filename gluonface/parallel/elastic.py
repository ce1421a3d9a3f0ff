"""Elastic Horovod for MXNet Gluon, on Horovod's framework-neutral ``horovod.common.elastic``.

Horovod 0.28.1 ships elastic wrappers for TensorFlow and PyTorch only. This module supplies the MXNet
pieces: an ``ElasticState`` that commits/restores/broadcasts Gluon parameters and trainer (optimizer) states
plus plain Python attributes (step, epoch, ...), and ``run`` which turns MXNet's errors from a broken
collective into ``HorovodInternalError`` so that Horovod's loop restores the last commit, re-initialises
with the surviving workers and calls the training function again. ``world_context`` gives the
``DistContext`` of the current membership. ``gluonface train`` uses all of it when ``dist.elastic`` is set
(``gluonface.engine.elastic_loop``).

Usage (under ``gluonface launch --engine horovod --elastic``, i.e. ``horovodrun`` with host discovery)::

    state = ElasticState(net.collect_params(), trainers=[trainer], step=0)

    @run
    def train(state):
        while state.step < total:
            ...; trainer.step(batch); state.step += 1
            if state.step % 10 == 0:
                state.commit()

    train(state)
"""
import dataclasses
import os
import re

import mxnet as mx

from gluonface.parallel.context import KVHandle, import_horovod
from gluonface.parallel.trainer import broadcast_from_rank0
from gluonface.errors import GluonFaceError


def require_elastic_launch(dist_ctx):
    """Refuse ``dist.elastic`` outside Horovod's elastic driver (nobody would re-form the ring)."""
    if dist_ctx.engine != "horovod" or os.environ.get("HOROVOD_ELASTIC") != "1":
        raise GluonFaceError("dist.elastic=true needs Horovod's elastic driver (engine here: "
                             f"{dist_ctx.engine}); fix: start the job with `gluonface launch CONFIG --engine "
                             "horovod --workers N --elastic`, or set dist.elastic=false")


def world_context(dist_ctx):
    """``dist_ctx`` with this membership's rank, size and local rank (after ``hvd.init``).

    The devices stay those the process started with (its parameters live there), and the collective
    name counters start again at zero: every member re-enters training from the same synced state, so
    they make the same calls in the same order.
    """
    hvd = import_horovod()
    return dataclasses.replace(dist_ctx, rank=hvd.rank(), num_workers=hvd.size(), local_rank=hvd.local_rank(),
                               handle=KVHandle(None))


def _trainer_state(trainer):
    """(pickled updater states, the optimizer's update counters): what the learning-rate schedule and
    Adam's bias correction read, besides momentum."""
    opt = trainer._optimizer
    counts = {dev: dict(c) for dev, c in opt._all_index_update_counts.items()}
    return trainer._updaters[0].get_states(dump_optimizer=False), (opt.num_update, counts)


def _set_trainer_state(trainer, saved):
    states, (num_update, counts) = saved
    for updater in trainer._updaters:
        updater.set_states(states)
    opt = trainer._optimizer
    opt.num_update = num_update
    opt._all_index_update_counts = {dev: dict(c) for dev, c in counts.items()}
    opt._all_index_update_counts.setdefault(0, {})
    opt._index_update_count = opt._all_index_update_counts[0]


def _broadcast_object(hvd):
    """The ``bcast_object`` Horovod's elastic state calls: ``horovod_ops.broadcast_object`` (allreduce-based,
    since Horovod's own ``broadcast_object`` can crash a rank), and ``obj`` itself when this process is the
    whole job (no op at size 1, where the same race crashed about one survivor in five in our kill tests).
    """
    from gluonface.parallel.horovod_ops import broadcast_object

    def bcast(obj, root_rank=0, name=None):
        if hvd.size() == 1:
            return obj
        return broadcast_object(hvd, obj, name or f"elastic.{type(obj).__name__}", root_rank)
    return bcast


def _scale_attr(trainer):
    # with fp16 AMP the loss scaler rewrites ``_scale`` from ``_amp_original_scale`` every step
    return "_amp_original_scale" if hasattr(trainer, "_amp_original_scale") else "_scale"


class ElasticState:
    """Factory: an ``ObjectState`` subclass instance (Horovod is imported lazily).

    Args:
        params: ``ParameterDict``/dict/list of initialised parameters to commit and broadcast.
        trainers: Horovod ``DistributedTrainer`` s whose optimizer states (and gradient scale) follow.
        **attrs: plain Python values, exposed as attributes, committed and broadcast from rank 0.
    """

    def __new__(cls, params, trainers=(), **attrs):
        from horovod.common.elastic import ObjectState
        hvd = import_horovod()

        class _MXState(ObjectState):
            def __init__(self):
                self.params = sorted(params.values() if hasattr(params, "values") else params,
                                     key=lambda p: p.name)
                self.trainers = list(trainers)
                # Without NCCL averaging DistributedTrainer divides its scale by the world size it was
                # built with; keep the one-worker scale to redo that for every new size.
                self._unit_scale = [getattr(t, _scale_attr(t)) * hvd.size()
                                    if getattr(t, "_average_in_framework", False) else None for t in self.trainers]
                self._saved_params = None
                self._saved_trainers = None
                super().__init__(bcast_object=_broadcast_object(hvd), get_rank=hvd.rank, **attrs)
                self._snapshot()

            def _snapshot(self):
                self._saved_params = [p.list_data()[0].copy() for p in self.params]
                self._saved_trainers = [_trainer_state(t) for t in self.trainers]
                mx.nd.waitall()

            def _rescale(self):
                for t, unit in zip(self.trainers, self._unit_scale):
                    if unit is not None:
                        setattr(t, _scale_attr(t), unit / hvd.size())

            def save(self):
                self._snapshot()
                super().save()

            def restore(self):
                for p, saved in zip(self.params, self._saved_params):
                    p.set_data(saved)
                for t, saved in zip(self.trainers, self._saved_trainers):
                    _set_trainer_state(t, saved)
                mx.nd.waitall()
                super().restore()

            def reset(self):
                # after hvd.init with the new members; sync may be skipped (workers only removed)
                self._rescale()

            def sync(self):
                # Every rank adopts rank 0's weights, optimizer states and attributes. Fixed tensor names:
                # a worker that joins later makes the same calls as the ones that were there.
                if hvd.size() > 1:   # alone, this process is rank 0 (and see _broadcast_object)
                    broadcast_from_rank0(hvd, self.params, "elastic.")
                    for i, t in enumerate(self.trainers):
                        _set_trainer_state(t, self._bcast_object(_trainer_state(t), root_rank=0,
                                                                 name=f"elastic.trainer{i}"))
                self._rescale()
                super().sync()
                self._snapshot()

        return _MXState()


def fail_fast_on_native_crash():
    """Let a native crash kill this process at once, with Python tracebacks of every thread on stderr.

    After a peer dies, MXNet 1.9.1 and Horovod 0.28.1 still crash or hang a survivor now and then (7 of
    115 survivors in our kill tests). The crashes are in the main thread's first wait after the failure
    (``WaitForAll`` in a core dump, ``WaitForVar`` in a fault dump): MXNet hands the failed ops' exceptions
    between engine threads without locks. Waiting per array and pausing first did not help, so this is not
    worked around. MXNet's own SIGSEGV handler calls ``exit()`` inside the handler, which deadlocks in
    Horovod's destructors: such a survivor hung until the launcher's timeout. With the default action it
    dies at once; Horovod's driver sees that, and the job fails (or continues with the other survivors)
    right away; ``--resume auto`` continues from the last checkpoint.
    """
    import faulthandler
    import signal
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    faulthandler.enable(all_threads=True)


# What a collective raises when a peer is gone. Horovod's own errors name it; Gloo's TCP transport errors name
# only the socket operation and the peer, and MXNet reformats them into a fake traceback frame, e.g.
#   File "Read error [127.0.0.1]", line 33198 / MXNetError: Connection reset by peer
# (seen in a survivor 2 times in 21 kill-rank0 runs; it must roll back like the others, not fail the job).
_PEER_GONE = re.compile(r"horovod|gloo|(read|write|connect) (error|timeout) \[|connection (reset|closed|refused) by "
                        r"peer|broken pipe|socket closed", re.IGNORECASE)


def _from_horovod(exc):
    """Whether an ``MXNetError`` comes from a broken collective (Gloo's socket errors, Horovod shut down)."""
    return bool(_PEER_GONE.search(str(exc)))


def run(func, heartbeat=None):
    """Decorator: run ``func(state, ...)`` elastically (see the module docstring).

    ``heartbeat`` (a ``gluonface.parallel.heartbeat.Heartbeat``) is told when a reset starts: re-forming the
    ring is a pause, not a stall."""
    from horovod.common.elastic import run_fn
    from horovod.common.exceptions import HorovodInternalError
    hvd = import_horovod()
    fail_fast_on_native_crash()

    def guarded(state, *args, **kwargs):
        try:
            return func(state, *args, **kwargs)
        except mx.base.MXNetError as exc:
            if not _from_horovod(exc):
                raise   # a real error would fail again after every rollback: let the job fail
            # a peer died mid-collective; Horovod's loop expects its own exception type to roll back
            if heartbeat is not None:
                heartbeat.phase("reset", now=True)
            try:
                mx.nd.waitall()
            except mx.base.MXNetError:
                pass
            raise HorovodInternalError(str(exc)) from exc

    def reset():
        hvd.shutdown()
        hvd.init()

    return run_fn(guarded, reset)
