"""An elastic Horovod job written against gluonface.parallel.elastic (used by the distributed tests).

Trains a tiny net for ``--steps`` steps, committing every ``--commit-every``; the process that is rank 1 at
the start SIGKILLs itself at ``--die-at``. The survivor must roll back to the last commit, continue alone
and finish; it writes ``OUT/result.json`` (final step, world sizes seen, steps redone) and its weights.
"""
import argparse
import json
import os
import signal

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from gluonface.config import DistConfig
from gluonface.parallel import init_dist, make_trainer
from gluonface.parallel.elastic import ElasticState, run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--commit-every", type=int, default=10)
    ap.add_argument("--die-at", type=int, default=25)
    args = ap.parse_args()
    dctx = init_dist(DistConfig(engine="horovod"), "cpu")
    import horovod.mxnet as hvd
    first_rank = dctx.rank
    mx.random.seed(1 + first_rank)
    net = gluon.nn.Dense(3, in_units=6)
    net.initialize(mx.init.Xavier(), ctx=dctx.ctx)
    trainer = make_trainer(net.collect_params(), "sgd", dctx, optimizer_params={"learning_rate": 0.1,
                                                                                "momentum": 0.9})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    teacher = np.random.RandomState(7).randn(6, 3)
    state = ElasticState(net.collect_params(), trainers=[trainer], step=0, sizes=[], redone=0)
    executed = []

    @run
    def train(state):
        state.sizes = state.sizes + [hvd.size()]
        while state.step < args.steps:
            if state.step == args.die_at and first_rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            if state.step in executed:
                state.redone += 1
            executed.append(state.step)
            x = np.random.RandomState(1000 * state.step + hvd.rank()).randn(4, 6).astype(np.float32)
            y = np.argmax(x @ teacher, axis=1).astype(np.float32)
            with autograd.record():
                loss = loss_fn(net(mx.nd.array(x)), mx.nd.array(y))
            loss.backward()
            trainer.step(4)
            mx.nd.waitall()
            state.step += 1
            if state.step % args.commit_every == 0:
                state.commit()

    train(state)
    if hvd.rank() == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump({"step": state.step, "sizes": state.sizes, "redone": state.redone,
                       "first_rank": first_rank, "final_size": hvd.size()}, f)


if __name__ == "__main__":
    main()
