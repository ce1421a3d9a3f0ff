"""``make_trainer``: the engine's ``gluon.Trainer``, with the same effective learning rate everywhere.

The loop calls ``trainer.step(worker_batch)`` where ``worker_batch`` is the number of samples this worker
processed (summed over its devices). Every engine then applies the mean gradient over the *global* batch:

* local: ``gluon.Trainer`` sums the per-device gradients (kvstore 'device'/'local') and divides by the
  worker batch = the global batch;
* kvstore: ps-lite *sums* gradients over workers, so the optimizer's scale is divided by ``num_workers``
  (the same thing Horovod's ``DistributedTrainer`` does for its average);
* horovod: ``DistributedTrainer`` averages over workers and divides by the worker batch.

Every worker must call ``step`` the same number of times: an extra step on one worker hangs ``dist_sync``
forever and stalls Horovod (``data.loader.TrainLoader`` gives every part the same step count).
"""
import mxnet as mx
from mxnet import gluon

from gluonface.parallel.kvstore_trainer import KVStoreTrainer
from gluonface.errors import GluonFaceError


def make_trainer(params, optimizer, dist_ctx, *, optimizer_params=None, batch_size=None, sharded=False,
                 prefix=None):
    """Build the trainer of ``dist_ctx.engine`` for ``params``.

    Args:
        params: ``ParameterDict``/dict/list of initialised parameters (call the net once first so no
            parameter is still deferred: the dist engines broadcast rank 0's weights right here).
        optimizer: name ('sgd') or ``mx.optimizer.Optimizer``; it must live in an importable module when
            the kvstore servers run it (see ``preflight.check_optimizer_pickles``).
        dist_ctx: ``DistContext`` from ``init_dist``.
        optimizer_params: dict for an optimizer given by name.
        batch_size: samples per ``step`` on this worker; required when the servers run the optimizer
            (``update_on_kvstore``), whose gradient scale is fixed when it is sent.
        sharded: the parameters are this worker's own shard (Partial FC class centres): gradients are never
            reduced across workers or devices and nothing is broadcast.
        prefix: a unique name per trainer for Horovod's tensor names (default: 'trainer<k>.').
    Returns:
        a ``gluon.Trainer`` (subclass) with ``step``, ``allreduce_grads``/``update``, ``learning_rate``,
        ``set_learning_rate``, ``save_states``, ``load_states``.
    """
    params = _as_list(params)
    optimizer_params = dict(optimizer_params or {})
    if sharded:
        return gluon.Trainer(params, optimizer, optimizer_params, kvstore=None)
    engine = dist_ctx.engine
    if engine == "local":
        return gluon.Trainer(params, optimizer, optimizer_params, kvstore=dist_ctx.kvstore,
                             update_on_kvstore=False if dist_ctx.kvstore else None)
    if engine == "kvstore":
        return KVStoreTrainer(params, optimizer, optimizer_params, dist_ctx=dist_ctx, batch_size=batch_size)
    if engine == "horovod":
        return _horovod_trainer(params, optimizer, optimizer_params, dist_ctx, prefix)
    raise GluonFaceError(f"unknown engine {engine!r}; fix: build the DistContext with init_dist")


def _as_list(params):
    if isinstance(params, (dict, gluon.ParameterDict)):
        return [params[k] for k in sorted(params.keys())]
    return list(params)


def _horovod_trainer(params, optimizer, optimizer_params, dist_ctx, prefix):
    from gluonface.parallel.context import import_horovod
    hvd = import_horovod()
    handle = dist_ctx.handle
    if prefix is None:
        prefix = f"trainer{handle.allocate(1)}."
    compression = hvd.Compression.fp16 if dist_ctx.compression == "fp16" else hvd.Compression.none
    named = {p.name: p for p in params}
    broadcast_from_rank0(hvd, params, prefix)
    # a dict: DistributedTrainer sorts a list of Parameters, which do not define '<'
    return hvd.DistributedTrainer(named, optimizer, optimizer_params or None, compression=compression,
                                  prefix=prefix)



def broadcast_from_rank0(hvd, params, prefix):
    """Rank 0's values of ``params`` on every Horovod rank, in place (all devices).

    One allreduce of the parameters' bytes (``horovod_ops.broadcast_arrays``), never Horovod's broadcast,
    which can crash a rank (see that module). Not ``hvd.broadcast_parameters`` either: after an
    inference-mode forward oneDNN keeps conv weights in its own layout, which Horovod cannot read ("can't
    generate TBlob for MKLDNN data"); the arrays are read in plain layout here.
    A single rank has nothing to receive: no Horovod operation is issued.
    """
    if hvd.size() == 1:
        return
    from gluonface.parallel.horovod_ops import broadcast_arrays
    plist = sorted(params, key=lambda q: q.name)
    values = broadcast_arrays(hvd, [p.list_data()[0] for p in plist], f"{prefix}bcast.params")
    if hvd.rank() != 0:
        for p, value in zip(plist, values):
            p.set_data(mx.nd.array(value, dtype=value.dtype))
    for p in plist:
        for arr in p.list_data():
            arr.wait_to_read()
