"""`gluonface train` for a kvstore dist_async job, as far as the engine allows today (fault-matrix worker).

`gluonface train` refuses dist_async: MXNet forces the optimizer onto the servers there
(update_on_kvstore), the servers hold one updater, and a run has two trainers (backbone, classifier).
This worker runs the same pieces with one trainer over both blocks: config, dataset and loader (forked
decoding workers), backbone and margin loss, the TrainLoop with its heartbeat and checkpoint hook, and the
failure path of `gluonface train` (heartbeat, `gluonface.parallel.failure`).

    python async_train_worker.py CONFIG [--set SECTION.KEY=VALUE ...]
"""
import argparse
import os

import mxnet as mx

from gluonface.config import load_config, save_config
from gluonface.parallel import init_dist, make_trainer
from gluonface.parallel.failure import leave_on_failure
from gluonface.parallel.heartbeat import start_heartbeat
from gluonface.engine.build import build_backbone, build_loader, build_loss, load_dataset, make_optimizer
from gluonface.engine.hooks import CheckpointHook
from gluonface.engine.loop import TrainLoop
from gluonface.engine.schedule import resolve_schedule


class SavesOnly:
    """The classifier's entry in the trainers dict: the shared trainer already steps it."""

    def __init__(self, trainer):
        self.trainer = trainer

    def step(self, batch_size):
        pass

    def save_states(self, fname):
        self.trainer.save_states(fname)

    @property
    def learning_rate(self):
        return self.trainer.learning_rate


def run(cfg, dist_ctx, heartbeat):
    dataset = load_dataset(cfg.data)
    ctx = list(dist_ctx.ctx)
    sched = resolve_schedule(cfg.optim, cfg.train, cfg.data.batch_size, len(dataset), len(ctx),
                             dist_ctx.num_workers)
    h, w = dataset.image_size
    net = build_backbone(cfg.model, ctx, cfg.train.seed, (h, w))
    loss_block = build_loss(cfg, dataset.num_classes, dist_ctx)
    loss_block.initialize(ctx=ctx)
    loss_block(net(mx.nd.zeros((1, 3, h, w), ctx=ctx[0])), mx.nd.zeros((1,), ctx=ctx[0]))
    net.hybridize(static_alloc=True, static_shape=True)
    name, params = make_optimizer(cfg.optim, sched)
    everything = list(net.collect_params().values()) + list(loss_block.collect_params().values())
    trainer = make_trainer(everything, name, dist_ctx, optimizer_params=params,
                           batch_size=sched.batch_per_worker, prefix="all.")
    trainers = {"backbone": trainer, "classifier": SavesOnly(trainer)}
    run_dir = cfg.train.run_dir
    if dist_ctx.is_main:
        os.makedirs(run_dir, exist_ok=True)
        save_config(cfg, os.path.join(run_dir, "config.yaml"), derived=dict(sched.as_dict(), image_size=[h, w]))
    hooks = [CheckpointHook(run_dir, cfg.train, dist_ctx, config_hash=cfg.trajectory_hash(), sharded=False,
                            hooks=[])]
    loader = build_loader(cfg, dataset, sched, dist_ctx)
    try:
        TrainLoop(net, loss_block, trainers, loader, dist_ctx, sched, hooks, heartbeat=heartbeat).run(
            0, sched.stop_step)
    finally:
        loader.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    heartbeat = start_heartbeat()
    dist_ctx = init_dist(cfg.dist, cfg.train.devices)
    heartbeat.set_rank(dist_ctx.rank, dist_ctx.num_workers)
    with leave_on_failure(dist_ctx, heartbeat):
        run(cfg, dist_ctx, heartbeat)
    heartbeat.close()


if __name__ == "__main__":
    main()
