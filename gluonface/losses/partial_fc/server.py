"""The optimizer the parameter servers run for Partial FC (pickled to them, so it lives in this module).

A ps-lite server holds ONE updater for all keys, so this optimizer serves every key of the job:

* the centre keys (one per block of rows): lazy SGD with momentum on the rows the workers pushed
  (``sgd_mom_update`` with a row-sparse gradient, ``lazy_update=True``: untouched rows get neither weight
  decay nor momentum);
* the momentum keys, one per centre block, of the same shape, so ps-lite places them the same way. A push
  to one (``bind``) hands the server-side array to this optimizer, which then updates it in place as
  that block's momentum: workers can pull it for a checkpoint and initialise it from one on resume, so
  resuming is exact although the optimizer runs on the servers;
* any other key (backbone trainer with ``update_on_kvstore=False``, metric collectives): the stored
  value becomes the merged sum of the pushes, exactly what a server without an updater does.

``ServerTrainer`` (``kvstore``) sends it with a constant learning rate and re-sends it when
the worker-side schedule changes the rate: a scheduler never has to be unpickled on a server (gluoncv's
cannot be imported there), and the state that must survive a re-send is in the momentum key.
"""
import os
import sys

# The servers unpickle this module from inside ``import mxnet`` (the server loop starts before the package
# finished importing, so ``mxnet.nd`` is not bound yet): import submodules by their own names only.
from mxnet import ndarray as nd
from mxnet.optimizer import Optimizer


class PartialFCServerSGD(Optimizer):
    """SGD with momentum for the centre keys, each block's momentum in its momentum key; sum for others.

    Args:
        centres_keys, momentum_keys: the integer keys of the centre blocks and of their momentum (pairs).
        momentum: SGD momentum.
        **kwargs: ``mx.optimizer.Optimizer`` arguments (``learning_rate``, ``wd``, ``rescale_grad``,
            ``clip_gradient``, ``lr_scheduler``, ``begin_num_update``).
    """

    def __init__(self, centres_keys, momentum_keys, momentum=0.0, **kwargs):
        super().__init__(**kwargs)
        self.centres_keys = frozenset(int(k) for k in centres_keys)
        self.momentum_of = {int(m): int(c) for c, m in zip(centres_keys, momentum_keys)}
        self.momentum = float(momentum)
        self._momentum_rows = {}

    def __getstate__(self):
        state = super().__getstate__()
        state["_momentum_rows"] = {}     # server-side arrays; every server binds its own
        return state

    def create_state(self, index, weight):
        return None

    def update(self, index, weight, grad, state):
        if index in self.momentum_of:
            self._momentum_rows[self.momentum_of[index]] = weight   # pushed values (a marker) are ignored
            return
        if index not in self.centres_keys:
            weight[:] = grad
            return
        momentum = self._momentum_rows.get(index)
        if momentum is None:
            # an exception here would be swallowed by the ctypes callback and the update silently skipped;
            # a dead server makes the launcher stop the whole job instead
            sys.stderr.write(f"gluonface: Partial FC centre key {index} updated before its momentum was "
                             "bound on this server; stopping\n")
            sys.stderr.flush()
            os._exit(70)
        self._update_count(index)
        kwargs = {"rescale_grad": self.rescale_grad, "lazy_update": True}
        if self.clip_gradient:
            kwargs["clip_gradient"] = self.clip_gradient
        nd.sgd_mom_update(weight, grad, momentum, out=weight, lr=self._get_lr(index),
                          wd=self._get_wd(index), momentum=self.momentum, **kwargs)
