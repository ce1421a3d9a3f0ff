"""One worker of the Partial FC parameter-server tests (scheduler and servers run this file too:
``import mxnet`` turns them into ps-lite roles before ``main``).

Scenarios, each writing ``OUT_DIR/<name>-rank<r>.npz`` (same batches as the Horovod worker):
``equiv-arcface`` / ``equiv-cosface`` (sample_rate=1), ``resume-straight`` / ``resume-resumed``
(sample_rate=0.5), ``sampling`` (sample_rate=0.1, C=400: learning) and ``memory`` (C=800 000).
"""
import faulthandler
import os
import sys
import types

faulthandler.dump_traceback_later(60, repeat=True)   # a stalled job leaves every role's stack in its log

# tiny matrices must still be sliced over both servers (ps-lite reads this in the worker)
os.environ.setdefault("MXNET_KVSTORE_BIGARRAY_BOUND", "64")

import mxnet as mx  # noqa: E402,F401  (servers and the scheduler never return from this import)
import numpy as np  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from partial_fc_hvd_worker import D, E, OPT, backbone_init, global_batches  # noqa: E402

from gluonface.parallel import init_dist, make_trainer  # noqa: E402
from gluonface.parallel.heartbeat import Heartbeat  # noqa: E402
from gluonface.losses.partial_fc import build_partial_fc  # noqa: E402
from gluonface.losses.partial_fc.kvstore import PartialFCKVStore  # noqa: E402


def build(dist_ctx, loss, num_classes, seed, n, backbone=None):
    dist_ctx.handle.optimizer_owner = None   # scenarios run one after the other in one job
    net = gluon.nn.Dense(E, in_units=D, use_bias=False)
    net.initialize(ctx=mx.cpu())
    net.weight.set_data(nd.array(backbone_init(seed) if backbone is None else backbone))
    # blocks of 16 rows: 16 x 8 floats is above the bound set above (sliced over both servers), a last
    # block of 4 rows is below it (one server, picked by key): both placements are exercised
    cls = PartialFCKVStore(num_classes, E, dist_ctx, sample_rate=loss.sample_rate, s=loss.s, m1=loss.m1, m2=loss.m2,
                           m3=loss.m3, seed=seed, block_rows=16)
    net_trainer = make_trainer(net.collect_params(), "sgd", dist_ctx, optimizer_params=OPT, batch_size=n)
    cls_trainer = cls.make_trainer("sgd", OPT, batch_size=n)
    return net, cls, net_trainer, cls_trainer


def train(dist_ctx, parts, x, y, start, stop):
    net, cls, net_trainer, cls_trainer = parts
    n = x.shape[1] // dist_ctx.num_workers
    mine = slice(dist_ctx.rank * n, (dist_ctx.rank + 1) * n)
    losses, positives_ok, pulled = [], True, 0
    for t in range(start, stop):
        with autograd.record():
            loss = cls(net(nd.array(x[t, mine])), nd.array(y[t, mine]))
        loss.backward()
        net_trainer.step(n)
        cls_trainer.step(n)
        losses.append(loss.asnumpy())
        positives_ok &= bool(np.isin(y[t, mine], cls.last_rows).all())
        pulled = max(pulled, cls.pulled.shape[0])
    return np.concatenate(losses), positives_ok, pulled


def full_matrix(cls, ckpt, trainer):
    cls.save_checkpoint(str(ckpt), trainer)
    if cls.rank != 0:
        return np.zeros(0)
    _, read = cls.rows.reader(ckpt)
    return np.concatenate([read(b)[0].asnumpy() for b in range(cls.rows.num_blocks)])


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def memory(dist_ctx, out):
    """C = 800 000, E = 64 (a 195 MB matrix), 800 rows per step: resident memory growth of each worker."""
    loss = types.SimpleNamespace(s=16.0, m1=1.0, m2=0.0, m3=0.3, easy_margin=False, sub_centers=1,
                                 sample_rate=0.001)
    dist_ctx.handle.optimizer_owner = None
    rng = np.random.default_rng(dist_ctx.rank)
    data = [(nd.array(rng.normal(size=(8, 64))), nd.array(rng.integers(0, 800000, 8))) for _ in range(4)]
    nd.waitall()
    before = rss_mb()
    cls = build_partial_fc(loss, 800000, 64, dist_ctx, seed=1)
    trainer = cls.make_trainer("sgd", OPT)
    for x, y in data:
        with autograd.record():
            loss_value = cls(x, y)
        loss_value.backward()
        trainer.step(8)
    nd.waitall()
    np.savez(os.path.join(out, f"memory-rank{dist_ctx.rank}.npz"), growth_mb=rss_mb() - before,
             matrix_mb=800000 * 64 * 4 / 2 ** 20, pulled=cls.pulled.shape[0])


def main(out):
    # Like a training worker, say "done" at the end: MXNet 1.9.1's exit can hang here (one worker in the dist
    # kvstore's exit barrier, the other in MXNotifyShutdown, seen with faulthandler in about 1 job in 5 on a
    # loaded 2-core machine); the launcher then stops the processes left after its finish grace, as it does
    # for `gluonface train`, instead of waiting for the job timeout.
    heartbeat = Heartbeat(interval=1.0)
    try:
        run(out)
    finally:
        heartbeat.close("done")


def run(out):
    dist_ctx = init_dist(types.SimpleNamespace(engine="kvstore", kvstore="dist_sync"))
    rank = dist_ctx.rank
    memory(dist_ctx, out)
    margins = {"arcface": (16.0, 1.0, 0.5, 0.0), "cosface": (16.0, 1.0, 0.0, 0.4)}
    for name, (s, m1, m2, m3) in margins.items():
        loss = types.SimpleNamespace(s=s, m1=m1, m2=m2, m3=m3, easy_margin=False, sub_centers=1, sample_rate=1.0)
        parts = build(dist_ctx, loss, 10, 3, 4)
        x, y = global_batches(5, 3, 8, 10)
        losses, _, _ = train(dist_ctx, parts, x, y, 0, 3)
        ckpt = os.path.join(out, f"ckpt-{name}")
        os.makedirs(ckpt, exist_ok=True)
        np.savez(os.path.join(out, f"equiv-{name}-rank{rank}.npz"), A=parts[0].weight.data().asnumpy(),
                 W=full_matrix(parts[1], ckpt, parts[3]), losses=losses)

    loss = types.SimpleNamespace(s=16.0, m1=1.0, m2=0.0, m3=0.4, easy_margin=False, sub_centers=1, sample_rate=0.5)
    x, y = global_batches(7, 4, 8, 20)
    straight = build(dist_ctx, loss, 20, 4, 4)
    train(dist_ctx, straight, x, y, 0, 4)
    ckpt = os.path.join(out, "ckpt-straight")
    os.makedirs(ckpt, exist_ok=True)
    np.savez(os.path.join(out, f"resume-straight-rank{rank}.npz"), A=straight[0].weight.data().asnumpy(),
             W=full_matrix(straight[1], ckpt, straight[3]))
    first = build(dist_ctx, loss, 20, 4, 4)
    train(dist_ctx, first, x, y, 0, 2)
    ckpt = os.path.join(out, "ckpt-resume")
    os.makedirs(ckpt, exist_ok=True)
    first[1].save_checkpoint(ckpt, first[3])
    first[2].save_states(os.path.join(ckpt, f"trainer-backbone-rank{rank}.states"))
    resumed = build(dist_ctx, loss, 20, 4, 4, backbone=first[0].weight.data().asnumpy())
    resumed[2].load_states(os.path.join(ckpt, f"trainer-backbone-rank{rank}.states"))
    resumed[1].load_checkpoint(ckpt, resumed[3])
    train(dist_ctx, resumed, x, y, 2, 4)
    ckpt = os.path.join(out, "ckpt-resumed")
    os.makedirs(ckpt, exist_ok=True)
    np.savez(os.path.join(out, f"resume-resumed-rank{rank}.npz"), A=resumed[0].weight.data().asnumpy(),
             W=full_matrix(resumed[1], ckpt, resumed[3]))

    loss.sample_rate = 0.1
    protos = np.random.default_rng(11).normal(size=(400, D)).astype(np.float32) * 3
    rng = np.random.default_rng(12)
    y = rng.integers(0, 20, size=(40, 16)) * 20      # 20 identities spread over the 400 rows
    x = (protos[y] + rng.normal(0, 0.3, size=(40, 16, D))).astype(np.float32)
    parts = build(dist_ctx, loss, 400, 5, 8)
    losses, positives_ok, pulled = train(dist_ctx, parts, x, y, 0, 40)
    np.savez(os.path.join(out, f"sampling-rank{rank}.npz"), losses=losses, positives_ok=positives_ok,
             pulled=pulled, params=len(list(parts[1].collect_params().keys())))


if __name__ == "__main__":
    main(sys.argv[1])
