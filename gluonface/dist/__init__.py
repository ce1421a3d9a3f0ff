"""Distributed training engines: local devices, MXNet parameter servers (ps-lite) and Horovod.

``init_dist`` says who this process is (``DistContext``); ``make_trainer`` builds the engine's trainer with
the same effective learning rate for the same global batch; ``collectives`` reduce metrics and broadcast
parameters. Nothing here runs at import time; MXNet and Horovod are imported by the functions that need them.
"""
from gluonface.dist.context import DistContext, init_dist, parse_devices

__all__ = ["DistContext", "init_dist", "parse_devices", "make_trainer"]


def make_trainer(*args, **kwargs):
    """See ``gluonface.dist.trainer.make_trainer`` (imported lazily: it imports MXNet)."""
    from gluonface.dist.trainer import make_trainer as _make
    return _make(*args, **kwargs)
