"""Distributed training engines: local devices, MXNet parameter servers (ps-lite) and Horovod.

``init_dist`` says who this process is (``DistContext``); ``make_trainer`` builds the engine's trainer with
the same effective learning rate for the same global batch (``kvstore_trainer`` holds the ps-lite specifics);
``collectives`` average metrics, broadcast parameters and synchronise; ``elastic`` makes a Gluon training
function survive Horovod workers leaving; ``preflight`` checks the optimizer survives the trip to the
servers; ``server`` is the entry point of scheduler/server processes. Nothing here runs at import time;
MXNet and Horovod are imported by the functions that need them.
"""
from gluonface.parallel.context import DistContext, init_dist, parse_devices

__all__ = ["DistContext", "init_dist", "parse_devices", "make_trainer"]


def make_trainer(*args, **kwargs):
    """See ``gluonface.parallel.trainer.make_trainer`` (imported lazily: it imports MXNet)."""
    from gluonface.parallel.trainer import make_trainer as _make
    return _make(*args, **kwargs)
