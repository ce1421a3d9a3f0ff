"""One Horovod rank of the Partial FC tests (started by ``horovodrun -np 2 ... python THIS OUT_DIR``).

Scenarios, each writing ``OUT_DIR/<name>-rank<r>.npz``:
* ``equiv-arcface`` / ``equiv-cosface``: 3 SGD steps of a linear backbone + PartialFCHorovod
  (sample_rate=1) on fixed global batches; the test compares with one NumPy process.
* ``resume``: sample_rate=0.5, 4 straight steps vs 2 steps + save_checkpoint + fresh objects +
  load_checkpoint + 2 steps.
* ``sampling``: sample_rate=0.3 on separable synthetic identities; losses and a positives check.
* ``uneven``: 3 and 5 samples on the two ranks, one forward/backward: losses and gradients.
"""
import os
import sys
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402

from gluonface.parallel import init_dist, make_trainer  # noqa: E402
from gluonface.losses.partial_fc import build_partial_fc  # noqa: E402

D, E = 6, 8
OPT = {"learning_rate": 0.1, "momentum": 0.9, "wd": 5e-4}


def global_batches(seed, steps, n_global, num_classes):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps, n_global, D)).astype(np.float32)
    y = rng.integers(0, num_classes, size=(steps, n_global))
    return x, y


def backbone_init(seed):
    return np.random.default_rng(seed + 1).normal(0, 0.5, size=(E, D)).astype(np.float32)


def build(dist_ctx, loss, num_classes, seed):
    net = gluon.nn.Dense(E, in_units=D, use_bias=False)
    net.initialize(ctx=mx.cpu())
    net.weight.set_data(nd.array(backbone_init(seed)))
    cls = build_partial_fc(loss, num_classes, E, dist_ctx, seed=seed)
    net_trainer = make_trainer(net.collect_params(), "sgd", dist_ctx, optimizer_params=OPT)
    cls_trainer = cls.make_trainer("sgd", OPT)
    return net, cls, net_trainer, cls_trainer


def train(dist_ctx, parts, x, y, start, stop):
    net, cls, net_trainer, cls_trainer = parts
    n = x.shape[1] // dist_ctx.num_workers
    mine = slice(dist_ctx.rank * n, (dist_ctx.rank + 1) * n)
    losses, positives_ok = [], True
    for t in range(start, stop):
        with autograd.record():
            loss = cls(net(nd.array(x[t, mine])), nd.array(y[t, mine]))
        loss.backward()
        net_trainer.step(n)
        cls_trainer.step(n)
        losses.append(loss.asnumpy())
        local = y[t] - cls.start
        wanted = np.unique(local[(local >= 0) & (local < cls.num_local)])
        positives_ok &= bool(np.isin(wanted, cls.last_rows).all())
    return np.concatenate(losses), positives_ok


def save(out, name, rank, parts, **extra):
    net, cls = parts[0], parts[1]
    np.savez(os.path.join(out, f"{name}-rank{rank}.npz"), A=net.weight.data().asnumpy(),
             W=cls.weight.data().asnumpy(), start=cls.start, **extra)


def uneven(dist_ctx, out):
    """Ranks with 3 and 5 samples: one forward/backward, no trainer (gradient convention check)."""
    loss = types.SimpleNamespace(s=16.0, m1=1.0, m2=0.5, m3=0.0, easy_margin=False, sub_centers=1,
                                 sample_rate=1.0)
    cls = build_partial_fc(loss, 10, E, dist_ctx, seed=3)
    x, y = global_batches(9, 1, 8, 10)
    mine = slice(0, 3) if dist_ctx.rank == 0 else slice(3, 8)
    emb = nd.array(np.pad(x[0, mine], ((0, 0), (0, E - D))))      # used directly as embeddings
    emb.attach_grad()
    with autograd.record():
        value = cls(emb, nd.array(y[0, mine]))
    value.backward()
    np.savez(os.path.join(out, f"uneven-rank{dist_ctx.rank}.npz"), loss=value.asnumpy(),
             emb_grad=emb.grad.asnumpy(), W_grad=cls.weight.grad().asnumpy())


def main(out):
    dist_ctx = init_dist(types.SimpleNamespace(engine="horovod"))
    rank = dist_ctx.rank
    uneven(dist_ctx, out)
    margins = {"arcface": (16.0, 1.0, 0.5, 0.0), "cosface": (16.0, 1.0, 0.0, 0.4)}
    for name, (s, m1, m2, m3) in margins.items():
        loss = types.SimpleNamespace(name=name, s=s, m1=m1, m2=m2, m3=m3, easy_margin=False, sub_centers=1,
                                     partial_fc=True, sample_rate=1.0)
        parts = build(dist_ctx, loss, 10, seed=3)
        x, y = global_batches(5, 3, 8, 10)
        losses, _ = train(dist_ctx, parts, x, y, 0, 3)
        save(out, f"equiv-{name}", rank, parts, losses=losses)

    loss = types.SimpleNamespace(name="cosface", s=16.0, m1=1.0, m2=0.0, m3=0.4, easy_margin=False,
                                 sub_centers=1, partial_fc=True, sample_rate=0.5)
    x, y = global_batches(7, 4, 8, 20)
    straight = build(dist_ctx, loss, 20, seed=4)
    train(dist_ctx, straight, x, y, 0, 4)
    save(out, "resume-straight", rank, straight)
    first = build(dist_ctx, loss, 20, seed=4)
    train(dist_ctx, first, x, y, 0, 2)
    ckpt = os.path.join(out, "ckpt")
    os.makedirs(ckpt, exist_ok=True)
    first[0].save_parameters(os.path.join(ckpt, f"backbone-rank{rank}.params"))
    first[2].save_states(os.path.join(ckpt, f"trainer-backbone-rank{rank}.states"))
    first[1].save_checkpoint(ckpt, first[3])
    resumed = build(dist_ctx, loss, 20, seed=4)
    for param in (resumed[0].weight, resumed[1].weight):    # garbage: everything must come from disk
        param.set_data(nd.ones_like(param.data()) * 7)
    resumed[0].load_parameters(os.path.join(ckpt, f"backbone-rank{rank}.params"))
    resumed[2].load_states(os.path.join(ckpt, f"trainer-backbone-rank{rank}.states"))
    resumed[1].load_checkpoint(ckpt, resumed[3])
    train(dist_ctx, resumed, x, y, 2, 4)
    save(out, "resume-resumed", rank, resumed)

    loss.sample_rate = 0.3
    protos = np.random.default_rng(11).normal(size=(40, D)).astype(np.float32) * 3
    rng = np.random.default_rng(12)
    y = rng.integers(0, 40, size=(40, 16))
    x = (protos[y] + rng.normal(0, 0.3, size=(40, 16, D))).astype(np.float32)
    parts = build(dist_ctx, loss, 40, seed=5)
    losses, positives_ok = train(dist_ctx, parts, x, y, 0, 40)
    save(out, "sampling", rank, parts, losses=losses, positives_ok=positives_ok,
         num_rows=len(parts[1].last_rows), num_local=parts[1].num_local)


if __name__ == "__main__":
    main(sys.argv[1])
