"""Collectives over the workers of a job, the same call for every engine.

Every worker must make the same calls in the same order (they are collectives): the kvstore engine uses
keys handed out in call order and Horovod matches tensors by name.
"""
import numbers

import mxnet as mx

from gluonface.parallel.context import import_horovod


def allreduce_mean(value, dist_ctx):
    """Mean of ``value`` over all workers.

    Args:
        value: a Python number or an ``NDArray`` (any shape, float32).
        dist_ctx: ``DistContext``.
    Returns:
        same kind as ``value``: a float, or a new ``NDArray`` on the input's context. Kvstore engine
        limitation: with ``update_on_kvstore=True`` the servers would run the optimizer on any key, and with
        2-bit compression every pushed value is quantised, so then the worker's own value is returned.
    """
    is_number = isinstance(value, numbers.Number)
    local_only = dist_ctx.engine == "kvstore" and (dist_ctx.update_on_kvstore or dist_ctx.compression != "none")
    if dist_ctx.num_workers == 1 or local_only:
        return float(value) if is_number else value.copy()
    arr = mx.nd.array([value], dtype="float32") if is_number else value.astype("float32")
    if dist_ctx.engine == "horovod":
        hvd = import_horovod()
        name = f"gluonface.mean.{dist_ctx.handle.allocate(1)}"
        out = hvd.allreduce(arr, average=True, name=name)
    else:
        out = _kv_sum(arr, dist_ctx) / dist_ctx.num_workers
    return float(out.asscalar()) if is_number else out.astype(value.dtype)


def _kv_sum(arr, dist_ctx):
    handle = dist_ctx.handle
    key = handle.metric_keys.get(arr.shape)
    if key is None:
        key = handle.allocate(1)
        handle.store.init(key, mx.nd.zeros(arr.shape))
        mx.nd.waitall()                 # rank 0's init must reach the servers before anyone pushes
        handle.store._barrier()
        handle.metric_keys[arr.shape] = key
    out = arr.copy()
    # servers without an updater store the merged sum of this round's pushes; the pull returns it
    handle.store.pushpull(key, arr, out=out)
    return out


def broadcast_parameters(params, dist_ctx, prefix="gluonface.bcast."):
    """Copy worker 0's values of ``params`` to every worker (in place, all devices).

    Args:
        params: ``ParameterDict``/dict/list of initialised parameters.
        dist_ctx: ``DistContext``. No-op for a single worker (device copies of a parameter already agree).
    """
    plist = [params[k] for k in sorted(params.keys())] if hasattr(params, "keys") else list(params)
    if dist_ctx.num_workers == 1:
        return
    if dist_ctx.engine == "horovod":
        from gluonface.parallel.trainer import broadcast_from_rank0
        broadcast_from_rank0(import_horovod(), plist, f"{prefix}{dist_ctx.handle.allocate(1)}.")
    else:
        from gluonface.parallel.kvstore_trainer import kv_broadcast
        store = dist_ctx.handle.store
        first = dist_ctx.handle.allocate(len(plist))
        kv_broadcast(store, store, list(range(first, first + len(plist))), plist)
    mx.nd.waitall()


def barrier(dist_ctx):
    """Block until every worker reaches this call."""
    if dist_ctx.num_workers == 1:
        return
    if dist_ctx.engine == "horovod":
        allreduce_mean(0.0, dist_ctx)
    else:
        dist_ctx.handle.store._barrier()   # ps-lite's worker barrier; public API has none in 1.9.1
