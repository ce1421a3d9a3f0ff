"""Elastic training under Horovod (``dist.elastic``): ``train``'s loop inside ``gluonface.parallel.elastic.run``.

A *session* is one membership of the job. It starts from the state every member holds after Horovod's
sync: rank 0's weights, optimizer states, step and hook states, i.e. the last commit after a failure. It
rebuilds what depends on the world size: the ``DistContext`` (rank, size), the DistributedTrainer's
gradient scale (``ElasticState.reset``/``sync``), the schedule's per-worker batch, the loader's shard and
the hooks; the member that is now rank 0 (re)opens the run's logs and writes the checkpoints.
``CommitHook`` commits every ``dist.commit_every`` steps (0: at every checkpoint) and at epoch ends.

The global batch is kept. ``P`` members take ``global_batch / P`` images each, and ``ShardSampler`` makes
step ``s`` global batch ``s`` of the epoch however it is split, so the data order, steps per epoch, the
learning-rate schedule (defined in steps), the gradient average (over the same images) and the checkpoints
are those of the job that lost no worker. Not bit-identical: BatchNorm statistics are per worker batch and
sums run in another order. The price is memory: a survivor's batch grows by ``workers / survivors``. Every
size from ``dist.min_workers`` to the starting size must divide the global batch; that is checked before
training, rather than changing the global batch (and with it what the learning rate and a step mean) mid-run.
"""
import dataclasses

from gluonface.engine.hooks import settle_batchnorm_stats
from gluonface.engine.loop import Hook, TrainLoop
from gluonface.errors import GluonFaceError


def check_global_batch(schedule, min_workers, num_workers):
    """Refuse a global batch that some allowed membership (``min_workers..num_workers``) cannot split."""
    bad = [p for p in range(min_workers, num_workers + 1) if schedule.global_batch % (p * schedule.num_devices)]
    if bad:
        raise GluonFaceError(
            f"dist.elastic: the global batch of {schedule.global_batch} images cannot be split evenly over "
            f"{', '.join(map(str, bad))} worker(s) (dist.min_workers={min_workers}, {num_workers} started); "
            "fix: make data.batch_size × --workers divisible by every worker count from --min-workers to "
            "--workers, or raise --min-workers")


def resize_schedule(schedule, num_workers):
    """``schedule`` for ``num_workers`` members with the same global batch (``batch_per_worker`` changes)."""
    per_worker, rest = divmod(schedule.global_batch, num_workers)
    if rest or per_worker % schedule.num_devices:
        check_global_batch(schedule, num_workers, num_workers)
    return dataclasses.replace(schedule, num_workers=num_workers, batch_per_worker=per_worker)


def commit_every(dist_cfg, train_cfg):
    """Steps between commits: ``dist.commit_every``, else the checkpoint cadence (0 = epoch ends only)."""
    return dist_cfg.commit_every or train_cfg.checkpoint_every


class CommitHook(Hook):
    """Commit the elastic state every ``every`` steps and at epoch ends (after that step's checkpoint).

    The commit copies the weights and optimizer states to host memory and records the step, the other
    hooks' states and the AMP loss scale; a failure rolls every survivor back to it. ``state.commit`` may
    raise Horovod's ``HostsUpdatedInterrupt`` (membership about to change), which ends the session.
    """

    name = "commit"

    def __init__(self, state, every, hooks, amp=None, logger=None):
        self.state, self.every, self.hooks, self.amp, self.logger = state, every, list(hooks), amp, logger

    def after_step(self, loop):
        if (self.every > 0 and loop.step % self.every == 0) or loop.epoch_end:
            self.state.step = loop.step
            self.state.hooks = {h.name: h.state_dict() for h in self.hooks}
            self.state.amp = self.amp.state_dict() if self.amp is not None else None
            with loop.heartbeat.pausing("commit"):
                settle_batchnorm_stats()      # the commit copies the running statistics too
                self.state.commit()
            if self.logger is not None:
                self.logger.info(f"elastic: committed step {loop.step}")


class ElasticRun:
    """The sessions of one elastic run; after ``run``: ``loop``, ``hooks``, ``dist_ctx`` and ``logger``
    are those of the last session (``logger`` is None unless this process ended as rank 0).

    Args:
        cfg: ``Config``. parts: ``build.Parts`` (built, possibly loaded from a checkpoint).
        dist_ctx: the ``DistContext`` the process started with (Horovod, elastic launch).
        make_hooks: ``(dist_ctx, logger) -> [hooks]``, the same hooks a non-elastic run gets.
        open_logger: ``(resume_step=step) -> RunLogger``: the run's logs, records after ``step`` dropped.
        logger: rank 0's ``RunLogger`` of the first session, else None.
    """

    def __init__(self, cfg, parts, dist_ctx, make_hooks, open_logger, logger=None, heartbeat=None):
        from gluonface.parallel.elastic import require_elastic_launch
        require_elastic_launch(dist_ctx)
        if parts.sharded:
            raise GluonFaceError("dist.elastic cannot re-split Partial FC's class-centre shards between a "
                                 "changing set of workers; fix: set loss.partial_fc=false, or run without "
                                 "--elastic and use --resume auto after a failure")
        check_global_batch(parts.schedule, cfg.dist.min_workers, dist_ctx.num_workers)
        self.cfg, self.parts, self.dist_ctx = cfg, parts, dist_ctx
        self.make_hooks, self.open_logger, self.logger = make_hooks, open_logger, logger
        self.heartbeat = heartbeat
        self.loop, self.hooks = None, []
        self._sessions, self._reached = 0, None

    def run(self, start, hooks):
        """Train from step ``start`` (``hooks``: their states, e.g. from a checkpoint, seed the first session)."""
        from gluonface.parallel.elastic import ElasticState, run
        p = self.parts
        params = list(p.net.collect_params().values()) + list(p.loss_block.collect_params().values())
        state = ElasticState(params, trainers=list(p.trainers.values()), step=start,
                             hooks={h.name: h.state_dict() for h in hooks},
                             amp=p.amp.state_dict() if p.amp is not None else None)
        run(self._session, heartbeat=self.heartbeat)(state)
        return self.loop

    def _session(self, state):
        from gluonface.parallel.elastic import world_context
        from gluonface.engine.build import build_loader
        from gluonface.engine.rng import restore_rng
        p, previous = self.parts, self.dist_ctx
        self.dist_ctx = dist_ctx = world_context(previous)
        if self.heartbeat is not None:
            self.heartbeat.set_rank(dist_ctx.rank, dist_ctx.num_workers)
        schedule = resize_schedule(p.schedule, dist_ctx.num_workers)
        if self._sessions > 0:
            self._reopen_logs(state.step, previous)
            restore_rng(None, self.cfg.train.seed, state.step, dist_ctx.rank)
            if p.amp is not None and state.amp:
                p.amp.load_state_dict(state.amp)
        self._sessions += 1
        self.hooks = self.make_hooks(dist_ctx, self.logger)
        for h in self.hooks:
            h.load_state_dict(state.hooks.get(h.name, {}))
        commit = CommitHook(state, commit_every(self.cfg.dist, self.cfg.train), self.hooks, p.amp, self.logger)
        loader = build_loader(self.cfg, p.loader.dataset, schedule, dist_ctx)
        self.loop = TrainLoop(p.net, p.loss_block, p.trainers, loader, dist_ctx, schedule, self.hooks + [commit],
                              amp=p.amp, heartbeat=self.heartbeat)
        try:
            self.loop.run(state.step, schedule.stop_step)
        finally:
            self._reached = self.loop.step
            loader.close()
        return self.loop

    def _reopen_logs(self, step, previous):
        """Rank 0 of the new membership (re)opens the logs; what was logged after ``step`` is dropped."""
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        if not self.dist_ctx.is_main:
            return
        self.logger = self.open_logger(resume_step=step)
        reached = self._reached or step
        redone = f"; redoing uncommitted steps {step + 1}..{reached}" if reached > step else ""
        self.logger.info(f"elastic: reset {self._sessions}: {self.dist_ctx.num_workers} worker(s) now (was "
                         f"{previous.num_workers}), this process is rank 0 (was rank {previous.rank}); restored "
                         f"the commit of step {step}, per-worker batch "
                         f"{self.parts.schedule.global_batch // self.dist_ctx.num_workers}{redone}")
