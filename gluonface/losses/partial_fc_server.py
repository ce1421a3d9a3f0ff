"""The optimizer the parameter servers run for Partial FC (pickled to them, so it lives in this module).

A ps-lite server holds ONE updater for all keys, so this optimizer serves every key of the job:

* the centre key: lazy SGD with momentum on the rows the workers pushed (``sgd_mom_update`` with a
  row-sparse gradient, ``lazy_update=True``: untouched rows get neither weight decay nor momentum);
* the momentum key: a matrix of the centres' shape, kept on the same servers and sliced the same way.
  A push to it (``bind``) hands the server-side array to this optimizer, which then updates it in place
  as the centres' momentum: workers can pull it for a checkpoint and initialise it from one on resume,
  so resuming is exact although the optimizer runs on the servers;
* any other key (backbone trainer with ``update_on_kvstore=False``, metric collectives): the stored
  value becomes the merged sum of the pushes, exactly what a server without an updater does.

``ServerTrainer`` (``partial_fc_kvstore``) sends it with a constant learning rate and re-sends it when
the worker-side schedule changes the rate: a scheduler never has to be unpickled on a server (gluoncv's
cannot be imported there), and the state that must survive a re-send is in the momentum key.
"""
# The servers unpickle this module from inside ``import mxnet`` (the server loop starts before the package
# finished importing, so ``mxnet.nd`` is not bound yet): import submodules by their own names only.
from mxnet import ndarray as nd
from mxnet.optimizer import Optimizer


class PartialFCServerSGD(Optimizer):
    """SGD with momentum for the centre key, momentum kept in ``momentum_key``; sum for other keys.

    Args:
        centres_key, momentum_key: the two integer keys of the Partial FC matrix.
        momentum: SGD momentum.
        **kwargs: ``mx.optimizer.Optimizer`` arguments (``learning_rate``, ``wd``, ``rescale_grad``,
            ``clip_gradient``, ``lr_scheduler``, ``begin_num_update``).
    """

    def __init__(self, centres_key, momentum_key, momentum=0.0, **kwargs):
        super().__init__(**kwargs)
        self.centres_key, self.momentum_key = int(centres_key), int(momentum_key)
        self.momentum = float(momentum)
        self._momentum_rows = None

    def __getstate__(self):
        state = super().__getstate__()
        state["_momentum_rows"] = None     # a server-side array; every server binds its own
        return state

    def create_state(self, index, weight):
        return None

    def update(self, index, weight, grad, state):
        if index == self.momentum_key:
            self._momentum_rows = weight      # the pushed values (a marker, see the block) are ignored
            return
        if index != self.centres_key:
            weight[:] = grad
            return
        if self._momentum_rows is None:
            raise RuntimeError("Partial FC centres updated before their momentum was bound on this server")
        self._update_count(index)
        kwargs = {"rescale_grad": self.rescale_grad, "lazy_update": True}
        if self.clip_gradient:
            kwargs["clip_gradient"] = self.clip_gradient
        nd.sgd_mom_update(weight, grad, self._momentum_rows, out=weight, lr=self._get_lr(index),
                          wd=self._get_wd(index), momentum=self.momentum, **kwargs)
