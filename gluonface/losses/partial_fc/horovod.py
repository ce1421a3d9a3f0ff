"""Partial FC over Horovod: each rank owns a block of class centres; features travel, centres never do.

Per step (W ranks, global batch N = sum of the ranks' batches, shard of ``ceil(C/W)`` rows at most):
all-gather the features ``(N, E)`` and labels; pick this shard's rows (all of them, or every positive
plus random negatives when ``sample_rate < 1``); margin logits ``(N, K)``; softmax over all shards with a
global max and sum (allreduce); per-sample loss of this rank's own samples. Backward: the softmax
gradient of every sample into this shard's centres, and the feature gradients summed over shards back
to the rank that owns each sample. See ``ops`` for the gradient scaling.

The centres (and their optimizer state) never leave the rank: train them with a *local* trainer
(``make_trainer``) and checkpoint them per rank (``save_checkpoint``).
"""
import os

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from gluonface.losses.partial_fc.comm import LocalComm
from gluonface.losses.partial_fc.ops import AllGatherRows, MarginSoftmaxCE, shard_cosine
from gluonface.losses.partial_fc.shard import init_rows, num_sampled, sample_rows, shard_range, step_rng


class PartialFCHorovod(gluon.Block):
    """Margin softmax over ``num_classes`` centres sharded across the ranks of ``comm``.

    Args:
        num_classes: C. embedding_size: E.
        sample_rate: fraction of this shard's centres used per step (positives always kept); 1 = exact.
        s, m1, m2, m3, easy_margin: margin ``s·(cos(m1·θ + m2) − m3)`` on the target class.
        seed: initial centres and negative sampling (a pure function of seed, rank and step).
        comm: ``HorovodComm`` (or ``LocalComm`` for one process).
        ctx: device of the centres.
    Call: ``loss = block(emb (n, E) float32, label (n,) float32|int)`` -> ``(n,)`` float32 per-sample loss
    of this rank's samples (record it under ``autograd.record()`` and call ``loss.backward()``).
    """

    sharded = True

    def __init__(self, num_classes, embedding_size, sample_rate=1.0, s=64.0, m1=1.0, m2=0.5, m3=0.0,
                 easy_margin=False, seed=0, comm=None, ctx=None, prefix="partialfc_"):
        super().__init__(prefix=prefix)
        self.comm = comm or LocalComm()
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.start, self.num_local = shard_range(num_classes, self.comm.rank, self.comm.size)
        self.num_sample = num_sampled(self.num_local, sample_rate)
        self.margin = (float(s), float(m1), float(m2), float(m3), bool(easy_margin))
        self.seed = int(seed)
        self.ctx = ctx or mx.cpu()
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(self.num_local, self.embedding_size),
                                          init=mx.init.Zero())
            # the sampling step counter rides in the parameter file, so a resumed run draws the same rows
            self.steps = self.params.get("steps", shape=(1,), init=mx.init.Zero(), grad_req="null",
                                         dtype="float64")
        self.collect_params().initialize(ctx=self.ctx)
        self.weight.set_data(nd.array(init_rows(self.seed, self.start, self.num_local, self.embedding_size),
                                      ctx=self.ctx))
        self.last_rows = None

    def forward(self, emb, label):
        comm, tag = self.comm, self.prefix
        # float32 on the wire and in the logits whatever the backbone's AMP dtype (bf16 has no Horovod type)
        emb = emb.as_in_context(self.ctx).astype("float32", copy=False)
        gather = AllGatherRows(comm, tag + "feat")
        feats = gather(emb)
        labels = comm.allgather(label.as_in_context(self.ctx).astype("int64"), tag + "label").asnumpy()
        with autograd.pause():
            step = int(self.steps.data().asscalar())
            self.steps.set_data(nd.array([step + 1], ctx=self.ctx, dtype="float64"))
        rows, target = sample_rows(labels, self.start, self.num_local, self.num_sample,
                                   step_rng(self.seed, comm.rank, step))
        self.last_rows = rows
        centres = self.weight.data(self.ctx)
        if rows.size < self.num_local:
            centres = nd.take(centres, nd.array(rows, ctx=self.ctx, dtype="int64"))
        cos = shard_cosine(feats, centres)
        losses = MarginSoftmaxCE(comm, tag + "ce", *self.margin)(cos, nd.array(target, ctx=self.ctx))
        begin, end = gather.span
        return nd.slice_axis(losses, axis=0, begin=begin, end=end)

    def assign_full_matrix(self, full):
        """Set this rank's centres from a full ``(C, E)`` matrix (NumPy), e.g. a dense classifier."""
        full = np.asarray(full, dtype=np.float32)
        self.weight.set_data(nd.array(full[self.start:self.start + self.num_local], ctx=self.ctx))

    def make_trainer(self, optimizer, optimizer_params=None, batch_size=None):
        """A local ``gluon.Trainer`` for the shard: nothing of it is reduced or broadcast across ranks.

        Step it with the same per-worker batch size as the backbone trainer (``batch_size`` is unused,
        accepted for the same signature as ``PartialFCKVStore.make_trainer``).
        """
        return gluon.Trainer([self.weight], optimizer, optimizer_params, kvstore=None)

    def checkpoint_files(self):
        """Names this rank writes into a checkpoint directory: (params, trainer states)."""
        r = self.comm.rank
        return f"classifier-rank{r}.params", f"trainer-classifier-rank{r}.states"

    def save_checkpoint(self, dirname, trainer):
        """Write this rank's centres, step counter and optimizer state into ``dirname`` (every rank calls)."""
        params, states = self.checkpoint_files()
        self.save_parameters(os.path.join(dirname, params))
        trainer.save_states(os.path.join(dirname, states))

    def load_checkpoint(self, dirname, trainer):
        """Restore what ``save_checkpoint`` wrote; the job must have the same C and W."""
        params, states = self.checkpoint_files()
        self.load_parameters(os.path.join(dirname, params), ctx=self.ctx)
        trainer.load_states(os.path.join(dirname, states))

