"""Run-directory checkpoints: atomic writes, a ``latest`` pointer written last, exact resume, ``best/``.

Layout (ARCHITECTURE.md, "Run directory")::

    RUN_DIR/checkpoints/step-00000100/  backbone.params, classifier.params (classifier-rank<r>.params when the
                                        classifier is sharded), trainer-backbone.states,
                                        trainer-classifier.states (…-rank<r>.states when sharded),
                                        rng-rank<r>.json (every rank), state.json
    RUN_DIR/checkpoints/latest          name of the newest complete checkpoint (written last)
    RUN_DIR/best -> .best-00000100/     backbone.params + state.json (symlink swapped atomically)

Why a crash never damages the previous checkpoint: files are written into ``step-XXXXXXXX.partial/`` (each
file via temp name + fsync + rename), the directory is renamed to its final name only when complete, and
``latest`` is replaced (temp + fsync + rename) after that. A reader follows ``latest``; a renamed directory
without a ``latest`` update is complete too, so it is also accepted. "Complete" is checked, not assumed:
MXNet can leave a ``.params`` file cut short without an error when the disk fills up, so every NDArray
file is walked before the directory is published (``params_file``). A write that fails (full disk, quota,
file-size limit) removes the staging directory and raises a ``GluonFaceError`` naming the path, the
intact previous checkpoint and the fix (``checkpoint_failure``). With several workers the run directory
must be on a file system all workers see (each rank writes its own RNG state and classifier shard).
"""
import dataclasses
import json
import os
import re
import shutil

from gluonface.engine.checkpoint_failure import TruncatedFile, write_failure
from gluonface.engine.params_file import check_complete
from gluonface.errors import GluonFaceError

CKPT = "checkpoints"
LATEST = "latest"
BEST = "best"
_STEP_RE = re.compile(r"^step-(\d{8})$")


def step_name(step):
    return f"step-{int(step):08d}"


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Call ``write(tmp_path)``, fsync the file, then rename it to ``path`` (never a half-written ``path``)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)


def _shard_suffix(sharded, rank):
    return f"-rank{rank}" if sharded else ""


def save_checkpoint(run_dir, step, *, backbone, classifier, trainers, state, rng, dist_ctx, sharded=False,
                    keep=3, barrier=None):
    """Write the checkpoint of ``step``; every worker calls this (only ``barrier`` is collective).

    Args:
        run_dir: the run directory.
        step: completed optimizer steps.
        backbone, classifier: Gluon blocks (``save_parameters``).
        trainers: ``{'backbone': Trainer, 'classifier': Trainer}``.
        state: JSON-able dict for ``state.json`` (rank 0's; step/epoch/config hash/...).
        rng: JSON-able dict of this rank's RNG states (``rng-rank<r>.json``).
        dist_ctx: ``DistContext`` (rank, num_workers, is_main).
        sharded: the classifier (and its trainer) is this rank's shard: every rank writes its own files.
        keep: complete checkpoints to keep (the newest; ``latest`` is never removed).
        barrier: callable with no arguments that waits for every worker (needed when num_workers > 1).
    Returns:
        the final checkpoint directory path.
    """
    root = os.path.join(run_dir, CKPT)
    name = step_name(step)
    final = os.path.join(root, name)
    staging = final + ".partial"
    try:
        _write_staging(staging, backbone, classifier, trainers, state, rng, dist_ctx, sharded, step, barrier)
    except Exception as exc:
        failure = write_failure(exc, staging, name, read_latest_name(run_dir))
        if failure is None:
            raise
        shutil.rmtree(staging, ignore_errors=True)   # give the space back; nothing of it was published
        raise failure from exc
    if dist_ctx.is_main:
        if os.path.isdir(final):
            if read_latest_name(run_dir) == name:
                shutil.rmtree(staging)   # this exact step is already published (resumed at a checkpoint)
                return _after_publish(final, dist_ctx, barrier)
            shutil.rmtree(final)         # published by a run that died before updating `latest`
        os.replace(staging, final)
        fsync_dir(root)
        atomic_write_text(os.path.join(root, LATEST), name + "\n")
        fsync_dir(root)
        _prune(root, keep, current=name)
    return _after_publish(final, dist_ctx, barrier)


def _after_publish(final, dist_ctx, barrier):
    if dist_ctx.num_workers > 1:
        barrier()       # nobody starts the next interval (or exits) before the checkpoint is published
    return final


def _write_staging(staging, backbone, classifier, trainers, state, rng, dist_ctx, sharded, step, barrier):
    """Every rank's files into ``staging``; on rank 0, checked complete and synced (not yet published)."""
    os.makedirs(staging, exist_ok=True)
    rank = dist_ctx.rank
    suffix = _shard_suffix(sharded, rank)
    if sharded and hasattr(classifier, "save_checkpoint"):
        classifier.save_checkpoint(staging, trainers["classifier"])   # the shard writes its own files
    elif sharded or dist_ctx.is_main:
        atomic_write(os.path.join(staging, f"classifier{suffix}.params"), classifier.save_parameters)
        atomic_write(os.path.join(staging, f"trainer-classifier{suffix}.states"), trainers["classifier"].save_states)
    atomic_write_text(os.path.join(staging, f"rng-rank{rank}.json"), json.dumps(rng))
    if dist_ctx.is_main:
        atomic_write(os.path.join(staging, "backbone.params"), backbone.save_parameters)
        atomic_write(os.path.join(staging, "trainer-backbone.states"), trainers["backbone"].save_states)
        full_state = dict(state, step=int(step), sharded=bool(sharded), num_workers=dist_ctx.num_workers)
        atomic_write_text(os.path.join(staging, "state.json"), json.dumps(full_state, indent=1))
    if dist_ctx.num_workers > 1:
        barrier()       # every rank's files are in staging before rank 0 publishes the directory
    if dist_ctx.is_main:
        check_params_complete(staging)
        fsync_dir(staging)


def check_params_complete(directory):
    """Raise ``TruncatedFile`` if an NDArray file in ``directory`` was cut short (see ``params_file``)."""
    for fname in sorted(os.listdir(directory)):
        if fname.endswith(".params"):
            problem = check_complete(os.path.join(directory, fname))
            if problem:
                raise TruncatedFile(problem)


def _prune(root, keep, current):
    complete = sorted(d for d in os.listdir(root) if _STEP_RE.match(d))
    for d in complete[:-keep]:
        if d != current:
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    for d in os.listdir(root):
        if d.endswith(".partial") and d[:-len(".partial")] < current:
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)


def read_latest_name(run_dir):
    path = os.path.join(run_dir, CKPT, LATEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip() or None


def latest_checkpoint(run_dir):
    """Path of the newest complete checkpoint of ``run_dir``, or None.

    ``latest`` names it; if ``latest`` is missing or stale (a crash between publishing a directory and
    updating the pointer) the newest complete ``step-*`` directory with a ``state.json`` wins.
    """
    root = os.path.join(run_dir, CKPT)
    if not os.path.isdir(root):
        return None
    complete = sorted(d for d in os.listdir(root)
                      if _STEP_RE.match(d) and os.path.isfile(os.path.join(root, d, "state.json")))
    name = read_latest_name(run_dir)
    if complete and (name is None or name not in complete or complete[-1] > name):
        name = complete[-1]
    return os.path.join(root, name) if name in complete else None


def read_state(ckpt_dir):
    with open(os.path.join(ckpt_dir, "state.json"), encoding="utf-8") as f:
        return json.load(f)


def load_checkpoint(ckpt_dir, *, backbone, classifier, trainers, dist_ctx, ctx):
    """Load parameters, trainer states and this rank's RNG states from ``ckpt_dir``.

    Call after the blocks are initialised (no deferred shapes) and the trainers built.
    Returns:
        (state dict from ``state.json``, rng dict of this rank or None if that file is missing).
    """
    state = read_state(ckpt_dir)
    sharded = bool(state.get("sharded"))
    if sharded and state.get("num_workers") != dist_ctx.num_workers:
        raise GluonFaceError(
            f"checkpoint {ckpt_dir} holds classifier shards of {state.get('num_workers')} workers but this job "
            f"has {dist_ctx.num_workers}; fix: resume with {state.get('num_workers')} workers")
    suffix = _shard_suffix(sharded, dist_ctx.rank)
    backbone.load_parameters(os.path.join(ckpt_dir, "backbone.params"), ctx=ctx)
    trainers["backbone"].load_states(os.path.join(ckpt_dir, "trainer-backbone.states"))
    if sharded and hasattr(classifier, "load_checkpoint"):
        classifier.load_checkpoint(ckpt_dir, trainers["classifier"])
    else:
        classifier.load_parameters(os.path.join(ckpt_dir, f"classifier{suffix}.params"), ctx=ctx)
        trainers["classifier"].load_states(os.path.join(ckpt_dir, f"trainer-classifier{suffix}.states"))
    rng_path = os.path.join(ckpt_dir, f"rng-rank{dist_ctx.rank}.json")
    rng = None
    if os.path.isfile(rng_path):
        with open(rng_path, encoding="utf-8") as f:
            rng = json.load(f)
    return state, rng


def save_best(run_dir, backbone, state):
    """Replace ``RUN_DIR/best`` by this backbone: written to ``.best-<step>/``, then the symlink is swapped."""
    name = f".best-{int(state['step']):08d}"
    target = os.path.join(run_dir, name)
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    try:
        atomic_write(os.path.join(target, "backbone.params"), backbone.save_parameters)
        atomic_write_text(os.path.join(target, "state.json"), json.dumps(state, indent=1))
        check_params_complete(target)
    except Exception as exc:
        failure = write_failure(exc, target, name, read_latest_name(run_dir))
        if failure is None:
            raise
        shutil.rmtree(target, ignore_errors=True)
        raise failure from exc
    fsync_dir(target)
    link = os.path.join(run_dir, BEST)
    old = os.readlink(link) if os.path.islink(link) else None
    tmp_link = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp_link):
        os.remove(tmp_link)
    os.symlink(name, tmp_link)
    os.replace(tmp_link, link)
    fsync_dir(run_dir)
    if old and old != name:
        shutil.rmtree(os.path.join(run_dir, old), ignore_errors=True)


def checkpoint_path(run_dir, which="latest"):
    """Directory holding ``backbone.params`` for ``which`` = 'latest' | 'best' | a step number."""
    if which == "latest":
        path = latest_checkpoint(run_dir)
        fix = "train first (`gluonface train CONFIG`) or pass which='best'"
    elif which == "best":
        path = os.path.join(run_dir, BEST)
        fix = "list verification sets in eval.bins so training keeps a best model, or use which='latest'"
    else:
        path = os.path.join(run_dir, CKPT, step_name(int(which)))
        fix = f"pick one of the steps in {os.path.join(run_dir, CKPT)}"
    if not path or not os.path.isfile(os.path.join(path, "backbone.params")):
        raise GluonFaceError(f"run directory '{run_dir}' has no '{which}' checkpoint; fix: {fix}")
    return path


def load_backbone(run_dir, which="latest", ctx=None):
    """Rebuild the backbone of a run from its ``config.yaml`` and load its parameters.

    Args:
        run_dir: a ``gluonface train`` output directory.
        which: 'latest', 'best' or a step number (int).
        ctx: ``mx.Context`` or list (default ``mx.cpu()``).
    Returns:
        (net, info): ``net`` is the (not hybridized) backbone HybridBlock mapping (N, 3, 112, 112) float32
        raw RGB to (N, E) float32 embeddings; ``info`` = {'model': model section dict, 'path': params file,
        'step': int, 'config_hash': str, 'config': Config}.
    """
    import mxnet as mx
    import yaml

    from gluonface.config import config_from_dict
    from gluonface.models import get_model
    cfg_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(cfg_path):
        raise GluonFaceError(f"'{run_dir}' is not a run directory (no config.yaml); fix: pass the directory "
                             "`gluonface train` wrote (train.run_dir)")
    with open(cfg_path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    cfg = config_from_dict(raw, origin=cfg_path)
    image_size = tuple((raw.get("derived") or {}).get("image_size") or (112, 112))
    path = checkpoint_path(run_dir, which)
    m = cfg.model
    net = get_model(m.name, embedding_size=m.embedding_size, head=m.head, dropout=m.dropout,
                    input_norm=m.input_norm, input_size=int(image_size[0]))
    params = os.path.join(path, "backbone.params")
    net.load_parameters(params, ctx=ctx or mx.cpu())
    step = read_state(path).get("step") if os.path.isfile(os.path.join(path, "state.json")) else None
    info = {"model": dataclasses.asdict(m), "path": params, "step": step, "config_hash": cfg.trajectory_hash(),
            "config": cfg, "image_size": image_size}
    return net, info
