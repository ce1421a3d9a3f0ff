"""Elastic Horovod for MXNet Gluon, on Horovod's framework-neutral ``horovod.common.elastic``.

Horovod 0.28.1 ships elastic wrappers for TensorFlow and PyTorch only. This module supplies the MXNet
pieces: an ``ElasticState`` that commits/restores/broadcasts Gluon parameters and trainer (optimizer) states
plus plain Python attributes (step, epoch, ...), and ``run`` which turns MXNet's errors from a broken
collective into ``HorovodInternalError`` so that Horovod's loop restores the last commit, re-initialises
with the surviving workers and calls the training function again.

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
import itertools

import mxnet as mx

from gluonface.dist.context import import_horovod
from gluonface.dist.trainer import broadcast_from_rank0

_sync_round = itertools.count()


class ElasticState:
    """Factory: an ``ObjectState`` subclass instance (Horovod is imported lazily)."""

    def __new__(cls, params, trainers=(), **attrs):
        from horovod.common.elastic import ObjectState
        hvd = import_horovod()

        class _MXState(ObjectState):
            def __init__(self):
                self.params = sorted(params.values() if hasattr(params, "values") else params,
                                     key=lambda p: p.name)
                self.trainers = list(trainers)
                # DistributedTrainer divides its scale by the world size it was built with
                self._unit_scale = [t._scale * hvd.size() for t in self.trainers]
                self._saved_params = None
                self._saved_trainers = None
                super().__init__(bcast_object=hvd.broadcast_object, get_rank=hvd.rank, **attrs)
                self._snapshot()

            def _snapshot(self):
                self._saved_params = [p.list_data()[0].copy() for p in self.params]
                self._saved_trainers = [t._updaters[0].get_states(dump_optimizer=False) for t in self.trainers]
                mx.nd.waitall()

            def save(self):
                self._snapshot()
                super().save()

            def restore(self):
                for p, saved in zip(self.params, self._saved_params):
                    p.set_data(saved)
                for t, states in zip(self.trainers, self._saved_trainers):
                    for updater in t._updaters:
                        updater.set_states(states)
                mx.nd.waitall()
                super().restore()

            def sync(self):
                # every rank adopts rank 0's weights, optimizer states and attributes, for the new world size
                broadcast_from_rank0(hvd, self.params, f"elastic.{next(_sync_round)}.")
                for i, t in enumerate(self.trainers):
                    states = hvd.broadcast_object(t._updaters[0].get_states(dump_optimizer=False),
                                                  root_rank=0, name=f"elastic.trainer{i}")
                    for updater in t._updaters:
                        updater.set_states(states)
                    t._scale = self._unit_scale[i] / hvd.size()
                super().sync()
                self._snapshot()

        return _MXState()


def run(func):
    """Decorator: run ``func(state, ...)`` elastically (see the module docstring)."""
    from horovod.common.elastic import run_fn
    from horovod.common.exceptions import HorovodInternalError
    hvd = import_horovod()

    def guarded(state, *args, **kwargs):
        try:
            return func(state, *args, **kwargs)
        except mx.base.MXNetError as exc:
            # a peer died mid-collective; Horovod's loop expects its own exception type to roll back
            try:
                mx.nd.waitall()
            except mx.base.MXNetError:
                pass
            raise HorovodInternalError(str(exc)) from exc

    def reset():
        hvd.shutdown()
        hvd.init()

    return run_fn(guarded, reset)
