"""A tiny training job written only against gluonface.parallel (used by the distributed tests).

Every worker builds the same small net from a *rank-dependent* seed (so only a working broadcast makes
the replicas agree), takes its slice of a fixed global batch per step, trains N steps and writes its
trainable parameters to ``OUT/rank<r>.npz`` plus ``OUT/rank<r>.json`` (losses, rank, size).
The local engine with ``--devices cpu:2`` is the single-process reference on the same global batch.
"""
import argparse
import json
import os
import signal

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from gluonface.config import DistConfig
from gluonface.parallel import collectives, init_dist, make_trainer

GLOBAL_BATCH = 8


def build_net(ctx, seed):
    mx.random.seed(seed)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(8, in_units=6), gluon.nn.BatchNorm(in_channels=8), gluon.nn.Activation("relu"),
            gluon.nn.Dense(3, in_units=8))
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net.hybridize()
    return net


def batch(step):
    """A learnable task: the label is the arg-max of a fixed linear map of the input."""
    x = np.random.RandomState(100 + step).randn(GLOBAL_BATCH, 6).astype(np.float32)
    teacher = np.random.RandomState(7).randn(6, 3)
    return x, np.argmax(x @ teacher, axis=1).astype(np.float32)


def _held_out(ctx):
    x = np.random.RandomState(99).randn(256, 6).astype(np.float32)
    y = np.argmax(x @ np.random.RandomState(7).randn(6, 3), axis=1).astype(np.float32)
    return mx.nd.array(x, ctx=ctx), mx.nd.array(y, ctx=ctx)


def _eval_loss(net, loss_fn, held_out):
    x, y = held_out
    return float(loss_fn(net(x), y).mean().asscalar())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--engine", default="local")
    ap.add_argument("--kvstore", default="device")
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--update-on-kvstore", action="store_true")
    ap.add_argument("--compression", default="none")
    ap.add_argument("--die-at", type=int, default=-1, help="worker rank 1 SIGKILLs itself at this step")
    args = ap.parse_args()

    dctx = init_dist(DistConfig(engine=args.engine, kvstore=args.kvstore, compression=args.compression,
                                update_on_kvstore=args.update_on_kvstore), args.devices)
    net = build_net(dctx.ctx, seed=1 + dctx.rank)
    net(mx.nd.zeros((1, 6), ctx=dctx.ctx[0]))
    per_worker = GLOBAL_BATCH // dctx.num_workers
    opt = {"learning_rate": args.lr, "momentum": args.momentum, "wd": 1e-3}
    if args.update_on_kvstore:
        # The servers must unpickle a gluoncv scheduler inside the optimizer (a constant one, so the result
        # equals the reference); a server that cannot, runs no optimizer and the parameters come out wrong.
        from gluoncv.utils import LRScheduler
        opt["lr_scheduler"] = LRScheduler("constant", base_lr=args.lr, nepochs=1, iters_per_epoch=args.steps)
    trainer = make_trainer(net.collect_params(), "sgd", dctx, optimizer_params=opt, batch_size=per_worker)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    held_out = _held_out(dctx.ctx[0])
    eval_before = _eval_loss(net, loss_fn, held_out)
    losses = []
    for step in range(args.steps):
        if step == args.die_at and dctx.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = batch(step)
        lo = dctx.rank * per_worker
        xs = np.array_split(x[lo:lo + per_worker], len(dctx.ctx))
        ys = np.array_split(y[lo:lo + per_worker], len(dctx.ctx))
        with autograd.record():
            ls = [loss_fn(net(mx.nd.array(a, ctx=c)), mx.nd.array(b, ctx=c)) for a, b, c in zip(xs, ys, dctx.ctx)]
        autograd.backward(ls)
        trainer.step(per_worker)
        local = sum(float(v.sum().asscalar()) for v in ls) / per_worker
        losses.append(collectives.allreduce_mean(local, dctx))
    eval_after = _eval_loss(net, loss_fn, held_out)
    mx.nd.waitall()
    params = {p.name.split("_", 1)[1]: p.data(dctx.ctx[0]).asnumpy()
              for p in net.collect_params().values() if p.grad_req != "null"}
    os.makedirs(args.out, exist_ok=True)
    np.savez(os.path.join(args.out, f"rank{dctx.rank}.npz"), **params)
    with open(os.path.join(args.out, f"rank{dctx.rank}.json"), "w") as f:
        json.dump({"rank": dctx.rank, "size": dctx.num_workers, "engine": dctx.engine, "losses": losses,
                   "eval_before": eval_before, "eval_after": eval_after}, f)


if __name__ == "__main__":
    main()
