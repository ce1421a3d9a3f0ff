"""A Horovod rank for test_horovod_broadcast: ``--mode gluonface`` broadcasts like gluonface does (Gluon
parameters through ``broadcast_from_rank0``, Python objects through the elastic state's ``bcast_object``);
``--mode horovod`` calls Horovod's own ``broadcast_`` with parameter-like names. Writes its values to --out."""
import argparse
import os
import pickle

import mxnet as mx
import numpy as np
from mxnet import gluon

import horovod.mxnet as hvd
from gluonface.parallel.elastic import _broadcast_object
from gluonface.parallel.trainer import broadcast_from_rank0


def _net(rank):
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(8, 3, in_channels=3), gluon.nn.BatchNorm(in_channels=8),
            gluon.nn.Dense(5, in_units=8 * 6 * 6))
    mx.random.seed(100 + rank)    # every rank starts from different weights
    net.initialize(mx.init.Xavier())
    net.hybridize(static_alloc=True)
    net(mx.nd.ones((2, 3, 8, 8)))  # an inference forward: oneDNN may keep the conv weight in its own layout
    weight = net[0].weight.data().asnumpy()
    weight.reshape(-1)[:3] = [-0.0, np.nan, np.inf] if rank == 0 else [1.0, 2.0, 3.0]
    net[0].weight.set_data(mx.nd.array(weight))
    return net


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("gluonface", "horovod"), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    hvd.init()
    rank = hvd.rank()
    result = {}
    if args.mode == "horovod":
        for i in range(args.rounds):
            arr = mx.nd.full((4,), rank + 1.0)
            hvd.broadcast_(arr, root_rank=0, name=f"trainer0.bcast.backbone_stage1_conv{i}_weight")
            result[f"round{i}"] = arr.asnumpy()
    else:
        bcast = _broadcast_object(hvd)
        for i in range(args.rounds):
            net = _net(rank)
            params = list(net.collect_params().values())
            broadcast_from_rank0(hvd, params, f"trainer{i}.")
            result.update({f"round{i}.{p.name}": p.data().asnumpy() for p in params})
            result[f"round{i}.object"] = bcast({"rank": rank, "round": i, "pad": "x" * (999 * rank)})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)


if __name__ == "__main__":
    main()
