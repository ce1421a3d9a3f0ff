"""Hooks of the training loop: logging, verification during training and checkpoints.

Hooks observe; they never change the model, the optimizer or the data. Every worker runs the same hooks
(checkpoints and the loss average are collective); only the main worker has a ``RunLogger`` and writes.
Order matters: verification runs before the checkpoint of the same step so ``best`` is in its state.
"""
import time

import mxnet as mx
import numpy as np

from gluonface.engine import checkpoint as ck
from gluonface.engine.loop import Hook
from gluonface.engine.rng import capture_rng, reseed_mxnet


def settle_batchnorm_stats():
    """Wait for every queued operation before reading BatchNorm running statistics.

    With oneDNN, MXNet 1.9.1's BatchNorm updates ``running_mean``/``running_var`` without declaring them as
    written (the symptom of apache/mxnet#18610), so ``asnumpy()`` on them does not wait for the last step's
    update: a checkpoint or a verification pass taken right after a step read them before or after that
    update depending on timing. Seen here as identical Partial FC runs whose checkpoints differed in the
    running statistics only (never with MXNET_ENGINE_TYPE=NaiveEngine or oneDNN off). ``waitall`` covers
    undeclared writes too."""
    mx.nd.waitall()


class LogHook(Hook):
    """Progress bar (loss, lr, img/s, ETA), a log line and a metrics.jsonl record every ``every`` steps."""

    name = "log"

    def __init__(self, logger, every, progress_bar, dist_ctx):
        self.logger, self.every, self.progress_bar, self.dist_ctx = logger, every, progress_bar, dist_ctx
        self.bar = None

    def before_train(self, loop):
        self._losses = []
        self._t0, self._step0 = time.perf_counter(), loop.step
        self._run_t0, self._run_step0 = self._t0, loop.step
        if self.logger is not None and self.progress_bar:
            from tqdm import tqdm
            self.bar = tqdm(total=loop.stop_step, initial=loop.step, unit="step", dynamic_ncols=True,
                            mininterval=1.0, smoothing=0.1)
            self.logger.console = self.bar.write

    def after_step(self, loop):
        # kept (detached from the graph) and summed only at the log step: nothing is queued or awaited here
        self._losses.extend(l.detach() for l in loop.last_losses)
        if self.bar is not None:
            self.bar.update(1)
        if loop.step % self.every == 0 or loop.step == loop.stop_step:
            self._emit(loop)

    def _emit(self, loop):
        from gluonface.parallel.collectives import allreduce_mean
        total = sum(float(l.asnumpy().astype(np.float64).sum()) for l in self._losses)
        images = sum(l.shape[0] for l in self._losses)
        loss = allreduce_mean(total / max(images, 1), self.dist_ctx)
        now = time.perf_counter()
        steps = loop.step - self._step0
        img_s = steps * loop.schedule.global_batch / max(now - self._t0, 1e-9)
        lr = float(loop.trainers["backbone"].learning_rate)
        self._losses, self._t0, self._step0 = [], now, loop.step
        if self.logger is None:
            return
        done = loop.step - self._run_step0
        eta = (loop.stop_step - loop.step) * (now - self._run_t0) / max(done, 1)
        spe = loop.schedule.steps_per_epoch
        self.logger.info(f"step {loop.step}/{loop.stop_step} epoch {loop.step / spe:.2f} loss {loss:.4f} "
                         f"lr {lr:.6g} {img_s:.1f} img/s eta {eta / 60:.1f} min")
        self.logger.record("train", loop.step, {"epoch": loop.step / spe, "loss": loss, "lr": lr,
                                                "img_per_s": img_s})
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}", img_s=f"{img_s:.0f}", refresh=False)

    def after_train(self, loop):
        if self.bar is not None:
            self.bar.close()
            self.logger.console = None


class VerifyHook(Hook):
    """10-fold verification on the ``.bin`` sets every ``eval.every`` steps and at the last step (main worker).

    The backbone with the best accuracy on ``best_by`` so far is written to ``RUN_DIR/best``.
    """

    name = "verify"

    def __init__(self, logger, eval_cfg, bins, run_dir, dist_ctx, image_size=(112, 112)):
        self.logger, self.cfg, self.bins = logger, eval_cfg, dict(bins)
        self.image_size = tuple(image_size)   # the training images' (H, W): pairs are decoded to it
        self.run_dir, self.dist_ctx = run_dir, dist_ctx
        self.best_by = eval_cfg.best_by or (next(iter(self.bins)) if self.bins else "")
        self.best = {"accuracy": None, "step": None}
        self.sets = {}
        self.last = {}

    def before_train(self, loop):
        if self.logger is None or not self.bins:
            return
        from gluonface.data.pairs import decode_bin
        for name, path in self.bins.items():
            images, issame = decode_bin(path, self.image_size)
            self.sets[name] = (images, np.asarray(issame, dtype=bool))

    def after_step(self, loop):
        due = self.cfg.every > 0 and loop.step % self.cfg.every == 0
        if self.sets and (due or loop.step == loop.stop_step):
            self.evaluate(loop)

    def evaluate(self, loop):
        with loop.heartbeat.pausing("verify"):
            self._evaluate(loop)

    def _evaluate(self, loop):
        from gluonface.evaluate.verification import embed_images, verification_metrics
        settle_batchnorm_stats()
        for name, (images, issame) in self.sets.items():
            t0 = time.perf_counter()
            emb = embed_images(loop.net, images, batch_size=self.cfg.batch_size, ctx=loop.ctx, flip=self.cfg.flip)
            m = verification_metrics(emb, issame, nfolds=self.cfg.nfolds)
            self.last[name] = m
            self.logger.info(f"verify {name} step {loop.step}: accuracy {100 * m['accuracy']:.2f}% "
                             f"± {100 * m['accuracy_std']:.2f} threshold {m['threshold']:.3f} "
                             f"({time.perf_counter() - t0:.1f} s)")
            self.logger.record("verify", loop.step, {"set": name, "accuracy": m["accuracy"],
                                                     "accuracy_std": m["accuracy_std"],
                                                     "threshold": m["threshold"], "auc": m["auc"]})
            if name == self.best_by and (self.best["accuracy"] is None or m["accuracy"] > self.best["accuracy"]):
                self.best = {"accuracy": m["accuracy"], "step": loop.step}
                ck.save_best(self.run_dir, loop.net, {"step": loop.step, "set": name, "accuracy": m["accuracy"],
                                                      "accuracy_std": m["accuracy_std"],
                                                      "threshold": m["threshold"]})

    def state_dict(self):
        return {"best": dict(self.best)}

    def load_state_dict(self, state):
        self.best = dict(state.get("best", self.best))


class CheckpointHook(Hook):
    """Checkpoint every ``checkpoint_every`` steps, at epoch ends (optional) and at the last step.

    After writing, MXNet's generators are re-seeded from (seed, step, rank) on every worker, which makes a
    resumed run draw the same random numbers as an uninterrupted one.
    """

    name = "checkpoint"

    def __init__(self, run_dir, train_cfg, dist_ctx, *, config_hash, sharded, hooks, amp=None):
        self.run_dir, self.cfg, self.dist_ctx = run_dir, train_cfg, dist_ctx
        self.config_hash, self.sharded, self.hooks, self.amp = config_hash, sharded, hooks, amp
        self.last_saved = None

    def after_step(self, loop):
        every = self.cfg.checkpoint_every
        due = (every > 0 and loop.step % every == 0) or (loop.epoch_end and self.cfg.checkpoint_at_epoch_end)
        if due or loop.step == loop.stop_step:
            self.save(loop)

    def save(self, loop):
        with loop.heartbeat.pausing("checkpoint"):
            self._save(loop)

    def _save(self, loop):
        from gluonface.parallel.collectives import barrier
        settle_batchnorm_stats()
        rank, seed = self.dist_ctx.rank, self.cfg.seed
        reseed_mxnet(seed, loop.step, rank)
        state = {"epoch": loop.step // loop.schedule.steps_per_epoch, "config_hash": self.config_hash,
                 "global_batch": loop.schedule.global_batch, "steps_per_epoch": loop.schedule.steps_per_epoch,
                 "hooks": {h.name: h.state_dict() for h in self.hooks if h.state_dict()},
                 "amp": self.amp.state_dict() if self.amp is not None else None}
        ck.save_checkpoint(self.run_dir, loop.step, backbone=loop.net, classifier=loop.loss_block,
                           trainers=loop.trainers, state=state, rng=capture_rng(seed, loop.step, rank),
                           dist_ctx=self.dist_ctx, sharded=self.sharded, keep=self.cfg.keep_checkpoints,
                           barrier=lambda: barrier(self.dist_ctx))
        self.last_saved = loop.step
