"""``train(cfg, resume)``: wire a config into a run (data → model → loss → trainers → loop with hooks).

The wiring is the same for every engine: ``init_dist`` says who this process is, ``make_trainer`` gives
the engine's trainer, the loop and hooks never look at the engine. Only the main worker writes the run
directory (checkpoints excepted: each rank writes its RNG state and, with Partial FC, its classifier shard).
"""
import contextlib
import os

import yaml

from gluonface.config import bin_name, save_config
from gluonface.engine import checkpoint as ck
from gluonface.errors import GluonFaceError


def resolve_run_dir(cfg):
    """``train.run_dir``, or ``runs/<config file stem>`` when it is empty."""
    if cfg.train.run_dir:
        return cfg.train.run_dir
    stem = os.path.splitext(os.path.basename(cfg.source))[0] if cfg.source else "run"
    return os.path.join("runs", stem)


def resolve_bins(eval_cfg, rec):
    """``{name: path}`` of the verification sets; a bare file name is looked up beside ``data.rec``."""
    rec_dir = rec if os.path.isdir(rec) else os.path.dirname(rec)
    out = {}
    for b in eval_cfg.bins:
        path = os.path.join(rec_dir, b) if os.path.dirname(b) == "" and rec_dir else b
        if not os.path.isfile(path):
            raise GluonFaceError(f"verification set '{b}' (eval.bins) not found at '{path}'; fix: build it with "
                                 "`gluonface pairs`, correct the path, or remove it from eval.bins")
        out[bin_name(b)] = path
    return out


def find_resume_checkpoint(run_dir, resume, say):
    """The checkpoint to start from: None (fresh) or a directory. ``resume`` is None, 'auto' or a run dir."""
    found = ck.latest_checkpoint(run_dir)
    if resume is None:
        if found:
            raise GluonFaceError(f"run directory '{run_dir}' already holds checkpoints (newest {found}); fix: "
                                 "pass --resume auto to continue it, or set train.run_dir to a new directory")
        return None
    if found is None:
        if resume == "auto":
            say(f"note: --resume auto found no checkpoint in '{run_dir}'; starting a fresh run")
            return None
        raise GluonFaceError(f"--resume {resume}: no complete checkpoint in '{run_dir}/checkpoints'; fix: "
                             "pass the run directory of an earlier `gluonface train`, or --resume auto")
    return found


def _check_same_trajectory(cfg, ckpt_dir, run_dir):
    state = ck.read_state(ckpt_dir)
    if state.get("config_hash") == cfg.trajectory_hash():
        return
    diff = []
    old_path = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(old_path):
        with open(old_path, encoding="utf-8") as f:
            old = yaml.safe_load(f)
        new = cfg.to_dict()
        diff = [f"{s}.{k}: {old.get(s, {}).get(k)!r} -> {v!r}" for s in new for k, v in new[s].items()
                if old.get(s, {}).get(k) != v]
    raise GluonFaceError(f"the config differs from the one run '{run_dir}' was trained with "
                         f"({'; '.join(diff) or 'hash mismatch'}); fix: resume with the same config and --set "
                         "values (only logging/eval/checkpoint keys may change), or start a new run_dir")


def _open_run_dir(cfg, run_dir, parts, dist_ctx, ckpt_dir):
    """Main worker: write config.yaml (with derived numbers), open the logs, print the resolved config."""
    from gluonface.engine.runlog import RunLogger
    sched = parts.schedule
    os.makedirs(run_dir, exist_ok=True)
    derived = dict(sched.as_dict(), image_size=list(parts.image_size))
    save_config(cfg, os.path.join(run_dir, "config.yaml"), derived=derived)
    logger = RunLogger(run_dir, resume_step=ck.read_state(ckpt_dir)["step"] if ckpt_dir else None)
    logger.info("resolved config:\n" + yaml.safe_dump(dict(cfg.to_dict(), derived=derived),
                                                      sort_keys=False, default_flow_style=None))
    logger.info(f"engine {dist_ctx.engine}: {dist_ctx.num_workers} worker(s) × {len(dist_ctx.ctx)} "
                f"device(s); {sched.num_images} images, {parts.num_classes} identities; run dir {run_dir}")
    return logger


def _resume(ckpt_dir, cfg, parts, hooks, dist_ctx, say):
    """Load a checkpoint into the built parts and hooks; returns the step to continue from."""
    from gluonface.engine.rng import restore_rng
    sched = parts.schedule
    state, rng = ck.load_checkpoint(ckpt_dir, backbone=parts.net, classifier=parts.loss_block,
                                    trainers=parts.trainers, dist_ctx=dist_ctx, ctx=dist_ctx.ctx)
    start = int(state["step"])
    if (state.get("global_batch"), state.get("steps_per_epoch")) != (sched.global_batch, sched.steps_per_epoch):
        raise GluonFaceError(
            f"{ckpt_dir} was written with a global batch of {state.get('global_batch')} "
            f"({state.get('steps_per_epoch')} steps per epoch); this job has {sched.global_batch} "
            f"({sched.steps_per_epoch}); fix: resume with the same workers × devices × data.batch_size")
    for h in hooks:
        h.load_state_dict(state.get("hooks", {}).get(h.name, {}))
    if parts.amp is not None and state.get("amp"):
        parts.amp.load_state_dict(state["amp"])
    restore_rng(rng, cfg.train.seed, start, dist_ctx.rank)
    say(f"resumed from {ckpt_dir} at step {start}")
    return start


def _make_hooks(cfg, run_dir, bins, parts, dist_ctx, logger):
    """Log, verification and checkpoint hooks, in that order (``best`` is in the checkpoint of its step)."""
    from gluonface.engine.hooks import CheckpointHook, LogHook, VerifyHook
    hooks = [LogHook(logger, cfg.train.log_every, cfg.train.progress_bar, dist_ctx),
             VerifyHook(logger, cfg.eval, bins, run_dir, dist_ctx, parts.image_size)]
    hooks.append(CheckpointHook(run_dir, cfg.train, dist_ctx, config_hash=cfg.trajectory_hash(),
                                sharded=parts.sharded, hooks=list(hooks), amp=parts.amp))
    return hooks


def train(cfg, resume=None):
    """Train (or resume) the run described by ``cfg``.

    With ``dist.elastic`` (set by ``gluonface launch --engine horovod --elastic``) the loop survives workers
    leaving: see ``gluonface.engine.elastic_loop``. In a multi-process job (kvstore, Horovod) a failure is
    printed and ends the process at once (``gluonface.parallel.failure``: a normal exit would wait for the
    peers forever); under ``gluonface launch`` the process also sends heartbeats (``gluonface.parallel.heartbeat``).

    Args:
        cfg: ``gluonface.config.Config``.
        resume: None (fresh; refuses a run dir that has checkpoints), 'auto' (continue the newest checkpoint
            of ``train.run_dir`` or start fresh with a note), or the path of a run directory to continue.
    Returns:
        dict: ``run_dir``, ``step`` (completed steps), ``schedule`` (derived numbers), ``is_main`` (this
        process ended as the main worker), ``verification`` (last ``{set: metrics}`` on the main worker),
        ``best`` (``{'accuracy', 'step'}``).
    """
    from gluonface.parallel import init_dist
    from gluonface.parallel.failure import leave_on_failure
    from gluonface.parallel.heartbeat import start_heartbeat

    heartbeat = start_heartbeat()
    dist_ctx = init_dist(cfg.dist, cfg.train.devices)
    heartbeat.set_rank(dist_ctx.rank, dist_ctx.num_workers)
    with leave_on_failure(dist_ctx, heartbeat):
        result = _train(cfg, resume, dist_ctx, heartbeat)
    heartbeat.close()
    return result


def _train(cfg, resume, dist_ctx, heartbeat):
    from functools import partial

    from gluonface.engine.build import build_everything
    from gluonface.engine.runlog import RunLogger, plot_curves

    run_dir = resume if resume not in (None, "auto") else resolve_run_dir(cfg)
    say = print if dist_ctx.is_main else (lambda *_: None)
    ckpt_dir = find_resume_checkpoint(run_dir, resume, say)
    if ckpt_dir:
        _check_same_trajectory(cfg, ckpt_dir, run_dir)
    bins = resolve_bins(cfg.eval, cfg.data.rec)

    parts = build_everything(cfg, dist_ctx)
    sched = parts.schedule
    logger = _open_run_dir(cfg, run_dir, parts, dist_ctx, ckpt_dir) if dist_ctx.is_main else None
    make_hooks = partial(_make_hooks, cfg, run_dir, bins, parts)
    hooks = make_hooks(dist_ctx, logger)
    start = _resume(ckpt_dir, cfg, parts, hooks, dist_ctx, say) if ckpt_dir else 0
    if cfg.dist.elastic:
        from gluonface.engine.elastic_loop import ElasticRun
        runner = ElasticRun(cfg, parts, dist_ctx, make_hooks, partial(RunLogger, run_dir), logger, heartbeat)
    else:
        runner = _WholeRun(parts, dist_ctx, logger, heartbeat)
    finished = False
    try:
        loop = runner.run(start, hooks)
        finished = True
    finally:
        parts.loader.close()
        if runner.logger is not None:
            # after a failure (a full disk, say) the logs must not replace the error that matters
            quiet = contextlib.nullcontext if finished else partial(contextlib.suppress, Exception)
            with quiet():
                plot_curves(os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "curves.png"))
            with quiet():
                runner.logger.close()
    verify_hook = next(h for h in runner.hooks if h.name == "verify")
    return {"run_dir": run_dir, "step": loop.step, "schedule": sched.as_dict(),
            "is_main": runner.dist_ctx.is_main, "verification": verify_hook.last, "best": verify_hook.best}


class _WholeRun:
    """One ``TrainLoop`` from start to stop, the non-elastic case of ``ElasticRun``'s interface: ``run(start,
    hooks)`` returns the loop; ``hooks``, ``dist_ctx`` and ``logger`` are then the final ones."""

    def __init__(self, parts, dist_ctx, logger, heartbeat=None):
        self.parts, self.dist_ctx, self.logger, self.hooks = parts, dist_ctx, logger, []
        self.heartbeat = heartbeat

    def run(self, start, hooks):
        from gluonface.engine.loop import TrainLoop
        p, self.hooks = self.parts, hooks
        loop = TrainLoop(p.net, p.loss_block, p.trainers, p.loader, self.dist_ctx, p.schedule, hooks, amp=p.amp,
                         heartbeat=self.heartbeat)
        loop.run(start, p.schedule.stop_step)
        return loop


def train_config(path, overrides=(), resume=None):
    """``gluonface train``: load the config, train, print a one-line summary on the main worker; returns
    ``train``'s result."""
    from gluonface.config import load_config
    result = train(load_config(path, overrides), resume=resume)
    if result["is_main"]:
        ver = ", ".join(f"{k} {100 * v['accuracy']:.2f}%" for k, v in result["verification"].items())
        print(f"done: {result['step']} steps in {result['run_dir']}" + (f"; verification {ver}" if ver else ""))
    return result
