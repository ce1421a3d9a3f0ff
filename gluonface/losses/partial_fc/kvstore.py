"""Partial FC on parameter servers: the ``(C, E)`` centre matrix is a row-sparse key on the servers.

Per step each worker pulls only the rows it needs (``row_sparse_pull``: its batch's classes plus
``ceil(sample_rate · C)`` minus those, random negatives), computes the margin softmax of its own samples
over those rows, and pushes the row-sparse gradient; the servers sum the workers' pushes and run
``PartialFCServerSGD`` on the touched rows. Worker memory for the classifier is O(rows pulled · E): the
matrix is kept as blocks of rows (``rowstore``), so even rank 0, which initialises the
servers and writes checkpoints, holds one 256 MB block at a time.

Why not a Gluon ``Parameter(stype='row_sparse')`` and a second ``gluon.Trainer``: the parameter would
allocate all C rows on every worker, and the trainer would number its keys from 0 and send its own
optimizer, colliding with the backbone trainer on the job's single store and single server updater.
The block uses the job's store (``dist_ctx.handle``) with keys of its own instead.
"""

import numpy as np
from mxnet import autograd, gluon, nd

from gluonface.errors import GluonFaceError
from gluonface.losses.partial_fc.comm import LocalComm
from gluonface.losses.partial_fc.ops import MarginSoftmaxCE, shard_cosine
from gluonface.losses.partial_fc.rowstore import RowStore
from gluonface.losses.partial_fc.server import PartialFCServerSGD
from gluonface.losses.partial_fc.shard import num_sampled, sample_rows, step_rng


class PartialFCKVStore(gluon.Block):
    """Margin softmax over ``num_classes`` centres held by the parameter servers of ``dist_ctx``.

    Args: as ``PartialFCHorovod`` plus ``dist_ctx`` (engine 'kvstore', ``handle.store`` a dist store) and
        ``block_rows`` (rows per server key; default 256 MB blocks).
    Call: ``loss = block(emb (n, E) float32, label (n,))`` -> ``(n,)`` float32 per-sample loss.
    """

    sharded = True

    def __init__(self, num_classes, embedding_size, dist_ctx, sample_rate=1.0, s=64.0, m1=1.0, m2=0.5,
                 m3=0.0, easy_margin=False, seed=0, ctx=None, block_rows=None, prefix="partialfc_"):
        super().__init__(prefix=prefix)
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.shape = (self.num_classes, self.embedding_size)
        self.num_sample = num_sampled(self.num_classes, sample_rate)
        self.margin = (float(s), float(m1), float(m2), float(m3), bool(easy_margin))
        self.seed, self.ctx = int(seed), ctx
        self.rank, self.num_workers = dist_ctx.rank, dist_ctx.num_workers
        self._handle = dist_ctx.handle
        self._store = dist_ctx.handle.store
        first = self._handle.allocate(RowStore.keys_needed(num_classes, embedding_size, block_rows))
        self.rows = RowStore(self._store, first, num_classes, embedding_size, self.rank, block_rows)
        self.steps = 0                 # forward calls: seeds the negative sampling
        self.last_rows = None          # (K,) int64 rows pulled by the last forward
        self.pulled = None             # (K, E) float32 centres of the last forward, with their gradient
        self._trainer = None
        self._keys_ready = False

    def forward(self, emb, label):
        self._init_keys()
        labels = label.asnumpy().astype(np.int64)
        rows, target = sample_rows(labels, 0, self.num_classes, self.num_sample,
                                   step_rng(self.seed, self.rank, self.steps))
        self.steps += 1
        with autograd.pause():
            centres = self.pull_rows(rows)
            centres.attach_grad()
        self.last_rows, self.pulled = rows, centres
        cos = shard_cosine(emb, centres.as_in_context(emb.context))
        # the worker holds every row its samples need: the softmax is local (no collective)
        return MarginSoftmaxCE(LocalComm(), "ce", *self.margin)(cos, nd.array(target, ctx=emb.context))

    def pull_rows(self, rows):
        """Rows ``rows`` (sorted ``(K,)`` int64) of the server-side matrix as a dense ``(K, E)`` array."""
        return self.rows.pull(rows)

    def push_gradient(self):
        """Send the last forward's centre gradient (row-sparse, per block) to the servers."""
        self.rows.push(self.last_rows, self.pulled.grad)

    def make_trainer(self, optimizer, optimizer_params=None, batch_size=None):
        """The object the loop steps for the centres (their optimizer runs on the servers).

        Args:
            optimizer: 'sgd' (the only one the servers run for Partial FC).
            optimizer_params: ``learning_rate``, ``momentum``, ``wd``, ``clip_gradient``,
                ``lr_scheduler`` (evaluated on the worker), ``begin_num_update``.
            batch_size: samples per ``step`` on this worker; default: fixed by the first ``step``. The
                servers' gradient scale is ``1 / (batch_size · W)``, sent once.
        """
        if optimizer != "sgd":
            raise GluonFaceError(f"Partial FC on parameter servers runs SGD only (got optim.name={optimizer!r}); "
                                 "fix: set optim.name=sgd, or dist.engine=horovod")
        if self._handle.optimizer_owner is not None:
            raise GluonFaceError("another trainer already runs its optimizer on the parameter servers, which hold "
                                 "one updater; fix: set dist.update_on_kvstore=false with loss.partial_fc")
        self._trainer = ServerTrainer(self, dict(optimizer_params or {}), batch_size)
        self._handle.optimizer_owner = self._trainer
        return self._trainer

    def checkpoint_files(self):
        """Names this rank writes into a checkpoint directory (rank 0: every block + json; others none)."""
        return self.rows.file_names() + ["classifier.json"] if self.rank == 0 else []

    def save_checkpoint(self, dirname, trainer):
        """Rank 0 pulls the matrix and its momentum block by block and writes them; the others return."""
        self._init_keys()
        if self.rank == 0:
            self.rows.save(dirname, {"steps": self.steps, "num_update": trainer.num_update})

    def load_checkpoint(self, dirname, trainer):
        """Every rank, before the first forward: start the servers from the checkpoint."""
        if self._keys_ready:
            raise GluonFaceError("load_checkpoint after training started; fix: load right after make_trainer")
        info, read = self.rows.reader(dirname)
        self.steps, trainer.num_update = int(info["steps"]), int(info["num_update"])
        self._init_keys(read if self.rank == 0 else None)

    def _init_keys(self, source=None):
        """Once, on every worker in the same order: the centre and momentum keys on the servers."""
        if not self._keys_ready:
            self.rows.init(self.seed, source)
            self._keys_ready = True

    def start_servers(self, optimizer):
        """On every worker before a push: send ``optimizer``, bind the momentum to it, verify it runs."""
        self._init_keys()
        self._store.set_optimizer(optimizer)
        self._store._barrier()            # every worker's copy of the optimizer is in place
        self.rows.bind()


class ServerTrainer:
    """What the loop steps for ``PartialFCKVStore``: pushes the centre gradient; the servers update.

    The learning-rate schedule never travels to the servers: the worker evaluates it exactly as a local
    ``gluon.Trainer`` would (an ``mx.optimizer.SGD`` built from the same parameters, so the scheduler's
    ``base_lr`` is set the same way) and re-sends the servers' optimizer with a constant rate whenever
    the value changes. The servers thus never unpickle a scheduler (gluoncv's cannot be imported inside
    a server process, where ``import mxnet`` never finishes), and ``set_learning_rate``'s trap
    (apache/mxnet#15919) does not arise. Re-sending is safe: the momentum lives in its key, not in the
    optimizer object.
    """

    def __init__(self, block, optimizer_params, batch_size=None):
        import mxnet as mx
        self._block = block
        params = dict(optimizer_params)
        self.num_update = int(params.pop("begin_num_update", 0))
        params.pop("rescale_grad", None)                  # set from the batch size
        self._local = mx.optimizer.SGD(**params)          # evaluates the schedule, never steps
        self._server_params = {k: v for k, v in params.items() if k in ("momentum", "wd", "clip_gradient")}
        self.batch_size = int(batch_size) if batch_size else None
        self._sent_lr = None

    @property
    def learning_rate(self):
        """The rate of the next step (what the optimizer's ``_get_lr`` gives at ``num_update + 1``)."""
        sched = self._local.lr_scheduler
        return float(sched(self.num_update + 1)) if sched is not None else float(self._local.lr)

    def server_optimizer(self, learning_rate):
        """The ``PartialFCServerSGD`` for the servers: constant ``learning_rate``, scale 1 / global batch."""
        b = self._block
        return PartialFCServerSGD(b.rows.centres_keys, b.rows.momentum_keys, learning_rate=learning_rate,
                                  rescale_grad=1.0 / (self.batch_size * b.num_workers), **self._server_params)

    def step(self, batch_size, ignore_stale_grad=False):
        """Push this step's gradient; the first call fixes the batch size (the servers' gradient scale)."""
        if getattr(self, "_amp_loss_scaler", None) is not None:
            raise GluonFaceError("fp16 dynamic loss scaling cannot reach an optimizer on the parameter servers; "
                                 "fix: train.amp=off or bf16 with loss.partial_fc on dist.engine=kvstore")
        if self.batch_size is None:
            self.batch_size = int(batch_size)
        if batch_size != self.batch_size:
            raise GluonFaceError(f"step({batch_size}) after step({self.batch_size}): the servers' gradient scale "
                                 "is fixed; fix: keep the batch size constant (the loader drops the last batch)")
        lr = self.learning_rate
        if lr != self._sent_lr:              # every worker computes the same rate: they all re-send together
            self._block.start_servers(self.server_optimizer(lr))
            self._sent_lr = lr
        self._block.push_gradient()
        self.num_update += 1

    def save_states(self, fname):
        """Nothing to write: the optimizer state is the momentum key, saved by ``save_checkpoint``."""

    def load_states(self, fname):
        """See ``save_states``."""
