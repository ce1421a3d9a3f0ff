"""``gluon.Trainer`` on a ps-lite dist kvstore, with MXNet 1.9.1's traps designed out.

Facts this class is built around (each has a test in tests/distributed):

* servers *sum* worker gradients: the scale is divided by ``num_workers`` so ``step(worker_batch)`` applies
  the global mean gradient, like Horovod's average;
* the lazy first broadcast inside ``step`` races the first gradient push on the same key (weights then
  become gradient sums, or the server aborts with "init K first"): the store is initialised, rank 0's pushes
  awaited, the workers synchronised and the weights pulled here, before the first forward;
* with ``update_on_kvstore=True`` (forced for ``dist_async``) the optimizer is pickled to the servers once:
  its gradient scale is frozen (so the batch size is fixed up front), ``set_learning_rate`` never reaches
  the servers (apache/mxnet#15919: refused here) and its states cannot be saved (only the
  hyper-parameters are written, with a warning) nor restored (resume is refused);
* ``Trainer`` reduces with ``pushpull``, which rejects gradient compression: with ``2bit`` the gradients
  go through ``push`` + ``pull`` instead, the path where ps-lite supports it.
"""
import logging
import pickle

import mxnet as mx
from mxnet import gluon
from mxnet.kvstore.base import KVStoreBase

from gluonface.parallel.preflight import check_optimizer_pickles
from gluonface.errors import GluonFaceError

LOG = logging.getLogger(__name__)
TWO_BIT = {"type": "2bit", "threshold": 0.5}
_SERVER_SIDE_MARKER = b"gluonface-server-side-optimizer\n"   # first line of such a states file


class OffsetStore(KVStoreBase):
    """A view of one shared store whose integer keys start at ``offset`` (one range per trainer)."""

    def __init__(self, store, offset):
        self._store = store
        self._offset = int(offset)

    def _key(self, key):
        if isinstance(key, (list, tuple)):
            return [self._offset + int(k) for k in key]
        return self._offset + int(key)

    def broadcast(self, key, value, out, priority=0):
        self._store.broadcast(self._key(key), value, out, priority=priority)

    def pushpull(self, key, value, out=None, priority=0):
        self._store.pushpull(self._key(key), value, out=out, priority=priority)

    def push(self, key, value, priority=0):
        self._store.push(self._key(key), value, priority=priority)

    def pull(self, key, out=None, priority=0, ignore_sparse=True):
        self._store.pull(self._key(key), out=out, priority=priority, ignore_sparse=ignore_sparse)

    def init(self, key, value):
        self._store.init(self._key(key), value)

    def set_optimizer(self, optimizer):
        self._store.set_optimizer(optimizer)

    def set_gradient_compression(self, compression_params):
        self._store.set_gradient_compression(compression_params)

    def is_capable(self, capability):
        return self._store.is_capable(capability)

    def save_optimizer_states(self, fname, dump_optimizer=False):
        self._store.save_optimizer_states(fname, dump_optimizer)

    def load_optimizer_states(self, fname):
        self._store.load_optimizer_states(fname)

    @property
    def type(self):
        return self._store.type

    @property
    def rank(self):
        return self._store.rank

    @property
    def num_workers(self):
        return self._store.num_workers


def kv_broadcast(store, raw_store, keys, params):
    """Initialise ``keys`` with rank 0's values of ``params`` and pull them into every copy on every worker.

    Ordered so that no pull or push can overtake rank 0's init (see ``_broadcast_initial_weights``). The
    pushed values are copies: after an inference-mode forward MKLDNN keeps conv weights in its own layout,
    which the dist push cannot serialise ("can't generate TBlob for MKLDNN data"); a copy is plain.
    """
    store.init(keys, [p.list_data()[0].copy() for p in params])
    mx.nd.waitall()
    raw_store._barrier()   # ps-lite's worker barrier; the public API has none in 1.9.1
    store.pull(keys, out=[p.list_data() for p in params])
    mx.nd.waitall()


class KVStoreTrainer(gluon.Trainer):
    """A ``gluon.Trainer`` on the job's dist store (see the module docstring for what differs)."""

    def __init__(self, params, optimizer, optimizer_params, *, dist_ctx, batch_size=None):
        handle = dist_ctx.handle
        self._on_servers = bool(dist_ctx.update_on_kvstore)
        if self._on_servers and handle.optimizer_owner is not None:
            raise GluonFaceError("only one trainer can run its optimizer on the parameter servers (they hold "
                                 "a single updater); fix: set dist.update_on_kvstore=false")
        if self._on_servers and not batch_size:
            raise ValueError("make_trainer(batch_size=...) is required when the servers run the optimizer")
        deferred = [p.name for p in params if p._deferred_init]
        if deferred:
            raise ValueError(f"parameters still deferred ({deferred[:3]}...): run one forward pass before "
                             "make_trainer so rank 0's weights can be broadcast before training")
        store = OffsetStore(handle.store, handle.allocate(len(params)))
        self._two_bit = dist_ctx.compression == "2bit"
        super().__init__(params, optimizer, optimizer_params, kvstore=store,
                         update_on_kvstore=self._on_servers)
        self._scale /= dist_ctx.num_workers
        self._batch_size = batch_size
        if self._on_servers:
            handle.optimizer_owner = self
            self._optimizer.rescale_grad = self._scale / batch_size
            if dist_ctx.is_main:   # rank 0's copy is the one the servers receive
                check_optimizer_pickles(self._optimizer)
        if self._two_bit and not getattr(handle, "compression_set", False):
            handle.store.set_gradient_compression(TWO_BIT)   # once per store, before the first key
            handle.compression_set = True
        self._init_kvstore()
        self._broadcast_initial_weights(handle.store)

    def _broadcast_initial_weights(self, raw_store):
        """Rank 0's weights to every worker, fully ordered, before anything is pushed.

        ``kv.broadcast`` (what ``Trainer`` does lazily) is rank 0's asynchronous init push plus a pull; the
        barrier inside init does not wait for that push, so another worker's pull or first gradient can
        reach the server before the key exists ("init K first", server abort) or before its value does
        (weights become gradient sums). Here: init, wait for rank 0's pushes to complete, barrier, pull.
        """
        kv_broadcast(self._kvstore, raw_store, list(range(len(self._params))), self._params)
        self._params_to_init = []

    def step(self, batch_size, ignore_stale_grad=False):
        if self._on_servers and batch_size != self._batch_size:
            raise GluonFaceError(f"step({batch_size}) after make_trainer(batch_size={self._batch_size}): "
                                 "the servers' optimizer has a fixed gradient scale; fix: keep the batch size "
                                 "constant (the loader drops the last partial batch)")
        super().step(batch_size, ignore_stale_grad)

    def set_learning_rate(self, lr):
        if self._on_servers:
            if lr == self.learning_rate:
                return
            raise GluonFaceError(
                f"cannot change the learning rate to {lr} while the parameter servers run the optimizer "
                "(MXNet never sends it to them, apache/mxnet#15919); fix: set dist.update_on_kvstore=false "
                "(not possible for dist_async: use a constant lr there)")
        super().set_learning_rate(lr)

    def _allreduce_grads(self):
        if not self._two_bit:
            return super()._allreduce_grads()
        for i, param in enumerate(self._params):
            if param.grad_req == "null":
                continue
            grads = param.list_grad()
            self._kvstore.push(i, grads, priority=-i)
            self._kvstore.pull(i, param.list_data() if self._on_servers else grads, priority=-i)
        return None

    def save_states(self, fname):
        if not self._on_servers:
            return super().save_states(fname)
        LOG.warning("optimizer states live on the parameter servers (update_on_kvstore=True) and cannot be "
                    "saved; %s holds the hyper-parameters only (such a run cannot be resumed)", fname)
        with open(fname, "wb") as fout:
            fout.write(_SERVER_SIDE_MARKER + pickle.dumps(self._optimizer))
        return None

    def load_states(self, fname):
        if not self._on_servers:
            return super().load_states(fname)
        raise GluonFaceError(
            f"cannot resume from {fname}: with dist.update_on_kvstore=true the servers hold the weights and "
            "optimizer states, which MXNet can neither save nor restore; fix: train with "
            "dist.update_on_kvstore=false (dist_sync/dist_device_sync) to be able to resume")
