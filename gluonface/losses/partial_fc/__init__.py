"""Partial FC: the classifier of 10^6-10^8 identities, which no single worker could hold.

``build_partial_fc`` picks the block for the job's engine:

* ``horovod`` (and ``local``, one worker): ``PartialFCHorovod``, class centres sharded across ranks
  (``ceil(C/W)`` each), features all-gathered, softmax with a global max and sum;
* ``kvstore``: ``PartialFCKVStore``, the centre matrix on the parameter servers as a row-sparse key,
  each worker pulling only the rows its batch needs (its classes plus sampled negatives).

The package: ``shard`` (which centres a rank owns and which a step samples; NumPy), ``ops`` (the sharded
margin softmax and all-gather operators), ``comm`` (the collectives, Horovod or in-process), ``horovod`` and
``kvstore`` (the two variants), ``rowstore`` (the servers' matrix as blocks of rows) and ``server`` (the
optimizer the parameter servers run on those rows). This module exposes ``build_partial_fc``.

Both blocks share one contract, so the engine loop does not branch on them (``engine/build.py`` and
``engine/checkpoint.py`` follow it)::

    cls = build_partial_fc(cfg.loss, num_classes, embedding_size, dist_ctx, seed=cfg.train.seed)
    trainer = cls.make_trainer('sgd', {'learning_rate': ..., 'momentum': ..., 'wd': ...,
                                       'lr_scheduler': ...})      # already initialised: no initialize()
    with autograd.record():
        loss = cls(net(x), label)         # (n,) per-sample loss of this worker's samples
    loss.backward()
    backbone_trainer.step(n); trainer.step(n)   # the same per-worker batch for both
    cls.save_checkpoint(ckpt_dir, trainer)      # on EVERY rank (each writes its own files)
    cls.load_checkpoint(ckpt_dir, trainer)      # on every rank, after make_trainer, before training

Both have ``sharded = True`` (never put them in the backbone's trainer, never broadcast or hybridize
them) and ``checkpoint_files()`` (the names this rank writes). With ``sample_rate = 1`` both equal the
full margin softmax of a single process on the global batch. Limits: one device per worker,
``sub_centers = 1``; on parameter servers SGD only, ``dist.update_on_kvstore = false`` (the servers'
single updater is Partial FC's, summing every other key) and no fp16 loss scaling.
"""
from gluonface.errors import GluonFaceError


def build_partial_fc(loss_cfg, num_classes, embedding_size, dist_ctx, seed=0):
    """The Partial FC classifier for this worker, initialised and ready to train.

    Args:
        loss_cfg: the ``loss`` config section (``s``, ``m1``, ``m2``, ``m3``, ``easy_margin``,
            ``sub_centers``, ``sample_rate``).
        num_classes: C, identities in the training set.
        embedding_size: E, the backbone's output width.
        dist_ctx: ``gluonface.parallel.DistContext`` (engine, rank, num_workers, ctx, handle).
        seed: initial centres (identical whatever the number of workers) and negative sampling.
    Returns:
        ``PartialFCHorovod`` (engines 'horovod' and 'local') or ``PartialFCKVStore`` ('kvstore').
    """
    import mxnet as mx
    if int(getattr(loss_cfg, "sub_centers", 1)) != 1:
        raise GluonFaceError(f"loss.sub_centers={loss_cfg.sub_centers} is not supported with Partial FC; "
                             "fix: set loss.sub_centers=1 or loss.partial_fc=false")
    ctx_list = list(getattr(dist_ctx, "ctx", None) or [mx.cpu()])
    if len(ctx_list) > 1:
        raise GluonFaceError(f"Partial FC runs one device per worker (got {len(ctx_list)}); fix: set "
                             "devices to a single device and start one worker per device")
    margin = dict(s=float(loss_cfg.s), m1=float(loss_cfg.m1), m2=float(loss_cfg.m2), m3=float(loss_cfg.m3),
                  easy_margin=bool(loss_cfg.easy_margin))
    rate = float(loss_cfg.sample_rate)
    if dist_ctx.engine == "kvstore":
        from gluonface.losses.partial_fc.kvstore import PartialFCKVStore
        return PartialFCKVStore(num_classes, embedding_size, dist_ctx, sample_rate=rate, seed=seed,
                                ctx=ctx_list[0], **margin)
    from gluonface.losses.partial_fc.horovod import PartialFCHorovod
    if dist_ctx.engine == "horovod":
        from gluonface.losses.partial_fc.comm import HorovodComm
        comm = HorovodComm()
    else:
        from gluonface.losses.partial_fc.comm import LocalComm
        comm = LocalComm()
    return PartialFCHorovod(num_classes, embedding_size, sample_rate=rate, seed=seed, comm=comm,
                            ctx=ctx_list[0], **margin)
