"""Build the parts of a run from its config: dataset, schedule, backbone, loss block, trainers, loader.

Kept apart from ``train.py`` so a benchmark or a test can build exactly what ``gluonface train`` trains.
"""
import random
from dataclasses import dataclass

import mxnet as mx
import numpy as np

from gluonface.engine.schedule import make_lr_scheduler, resolve_schedule
from gluonface.errors import GluonFaceError

# no weight decay on these (optim.no_wd_bn_bias): BatchNorm scale/shift and biases
_NO_WD_SUFFIXES = ("gamma", "beta", "bias")


@dataclass
class Parts:
    net: object
    loss_block: object
    trainers: dict
    loader: object
    schedule: object
    num_classes: int
    sharded: bool
    amp: object
    image_size: tuple


def load_dataset(data_cfg):
    from gluonface.data.record import FaceRecordDataset
    if not data_cfg.rec:
        raise GluonFaceError("data.rec is empty; fix: point it at a training rec, e.g. "
                             "--set data.rec=/data/faces_emore (made by `gluonface pack`)")
    return FaceRecordDataset(data_cfg.rec, min_images_per_identity=data_cfg.min_images_per_identity)


def build_loss(cfg, num_classes, dist_ctx):
    """The classifier block: margin loss over all classes, or this rank's Partial FC shard."""
    from gluonface.losses import get_loss
    lc = cfg.loss
    kw = dict(s=lc.s, m1=lc.m1, m2=lc.m2, m3=lc.m3, easy_margin=lc.easy_margin)
    if lc.partial_fc:
        from gluonface.losses.partial_fc import build_partial_fc
        return build_partial_fc(lc, num_classes, cfg.model.embedding_size, dist_ctx, seed=cfg.train.seed)
    if lc.sub_centers > 1:
        kw["sub_centers"] = lc.sub_centers
    return get_loss(lc.name, num_classes, cfg.model.embedding_size, **kw)


def make_optimizer(optim_cfg, schedule):
    """(name, params) for ``make_trainer``; each call gets its own schedule object."""
    params = {"learning_rate": schedule.lr, "wd": optim_cfg.wd,
              "lr_scheduler": make_lr_scheduler(optim_cfg, schedule)}
    if optim_cfg.clip_gradient > 0:
        params["clip_gradient"] = optim_cfg.clip_gradient
    if optim_cfg.name == "sgd":
        params["momentum"] = optim_cfg.momentum
        return "sgd", params
    import gluonface.engine.adamw  # noqa: F401  (registers 'adamw' with MXNet)
    params.update(beta1=optim_cfg.beta1, beta2=optim_cfg.beta2, epsilon=optim_cfg.epsilon)
    return "adamw", params


def build_backbone(model_cfg, ctx, seed, image_size=(112, 112)):
    """The backbone, seeded and fully initialised on ``ctx`` (one forward of zeros finishes deferred shapes,
    so the initial weights depend only on ``seed``).

    Xavier-gaussian (factor 'out', magnitude 2) as insightface initialises its MXNet backbones.
    """
    from gluonface.models import get_model
    seed_everything(seed)
    m = model_cfg
    net = get_model(m.name, embedding_size=m.embedding_size, head=m.head, dropout=m.dropout,
                    input_norm=m.input_norm, input_size=int(image_size[0]))
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2), ctx=ctx)
    net(mx.nd.zeros((1, 3) + tuple(image_size), ctx=ctx[0]))
    return net


def exempt_from_weight_decay(block):
    """Set ``wd_mult = 0`` on BatchNorm gamma/beta and biases of ``block``; returns their names."""
    names = [n for n in block.collect_params() if n.endswith(_NO_WD_SUFFIXES)]
    for n in names:
        block.collect_params()[n].wd_mult = 0.0
    return names


def seed_everything(seed):
    mx.random.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build_everything(cfg, dist_ctx, loader=True):
    """Every part of a run, initialised, hybridized and ready to step (nothing loaded from checkpoints)."""
    from gluonface.parallel import make_trainer
    from gluonface.engine.precision import AmpPolicy
    dataset = load_dataset(cfg.data)
    ctx = list(dist_ctx.ctx)
    sched = resolve_schedule(cfg.optim, cfg.train, cfg.data.batch_size, len(dataset), len(ctx),
                             dist_ctx.num_workers)
    amp = AmpPolicy.create(cfg.train.amp, ctx, say=print if dist_ctx.is_main else (lambda *_: None))
    h, w = dataset.image_size
    net = build_backbone(cfg.model, ctx, cfg.train.seed, (h, w))
    loss_block = build_loss(cfg, dataset.num_classes, dist_ctx)
    sharded = bool(getattr(loss_block, "sharded", False))
    if not sharded:
        loss_block.initialize(ctx=ctx)
    # finish deferred shapes now: the dist engines broadcast rank 0's weights when the trainer is built
    emb = net(mx.nd.zeros((1, 3, h, w), ctx=ctx[0]))
    if not sharded:
        loss_block(emb, mx.nd.zeros((1,), ctx=ctx[0]))
    if cfg.optim.no_wd_bn_bias:
        exempt_from_weight_decay(net)
    net = amp.convert(net, ctx) if amp is not None else net
    if cfg.train.hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
        if hasattr(loss_block, "hybridize") and not sharded:
            loss_block.hybridize(static_alloc=True, static_shape=True)
    name, params = make_optimizer(cfg.optim, sched)
    # parameters in structural order, not sorted by name: Gluon's auto-names come from process-wide
    # counters, so a name-sorted order (and with it the optimizer-state indices in checkpoints) could
    # differ between the run that saved and the one that resumes
    trainers = {"backbone": make_trainer(list(net.collect_params().values()), name, dist_ctx,
                                         optimizer_params=params, batch_size=sched.batch_per_worker,
                                         prefix="backbone.")}
    name, params = make_optimizer(cfg.optim, sched)
    if sharded and hasattr(loss_block, "make_trainer"):
        # a sharded classifier knows how its shard is updated (locally, or rows on the servers)
        trainers["classifier"] = loss_block.make_trainer(name, params)
    else:
        trainers["classifier"] = make_trainer(list(loss_block.collect_params().values()), name, dist_ctx,
                                              optimizer_params=params, batch_size=sched.batch_per_worker,
                                              sharded=sharded, prefix="classifier.")
    if amp is not None:
        amp.init_trainers(trainers)
    train_loader = build_loader(cfg, dataset, sched, dist_ctx) if loader else None
    return Parts(net=net, loss_block=loss_block, trainers=trainers, loader=train_loader, schedule=sched,
                 num_classes=dataset.num_classes, sharded=sharded, amp=amp, image_size=(h, w))


def build_loader(cfg, dataset, sched, dist_ctx):
    from gluonface.data.loader import TrainLoader
    from gluonface.data.transforms import AugmentConfig
    d = cfg.data
    augment = AugmentConfig(flip=d.flip, rotate_deg=d.rotation, random_crop_scale=(d.crop_scale, 1.0),
                            brightness=d.brightness, contrast=d.contrast, saturation=d.saturation)
    return TrainLoader(dataset, sched.batch_per_worker, seed=cfg.train.seed, part_index=dist_ctx.rank,
                       num_parts=dist_ctx.num_workers, augment=augment, normalize=False,
                       num_workers=d.num_workers, decode_cache_mb=d.decode_cache_mb)
