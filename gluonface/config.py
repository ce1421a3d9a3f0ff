"""Experiment configuration: frozen, typed sections loaded from YAML.

An experiment file states only what differs from ``configs/base.yaml`` (one level of ``base:`` inheritance,
the path relative to the experiment file). ``load_config(path, overrides)`` returns a frozen ``Config`` whose
sections (``data``, ``model``, ``loss``, ``optim``, ``train``, ``dist``, ``eval``) are passed around on their own.
Unknown keys, wrong types and impossible values raise ``GluonFaceError`` naming the key, the file (or ``--set``)
that set it, and the fix. Paths inside a config are used as written (relative paths are relative to the
working directory), so ``--set data.rec=/data/faces_emore`` points any shipped config at a dataset.
"""
import dataclasses
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Tuple

from gluonface.errors import GluonFaceError

SECTIONS = ("data", "model", "loss", "optim", "train", "dist", "eval")


class ConfigError(GluonFaceError):
    """A bad config value; ``key`` is ``section.name``. ``load_config`` adds the file that set it."""

    def __init__(self, key, problem, fix):
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"config key '{key}': {problem}; fix: {fix}")


def _require(ok, key, problem, fix):
    if not ok:
        raise ConfigError(key, problem, fix)


def _one_of(value, allowed, key):
    _require(value in allowed, key, f"'{value}' is not one of {', '.join(map(str, allowed))}",
             f"use one of {', '.join(map(str, allowed))}")


class _Section:
    """Type checking shared by the section dataclasses (run from ``__post_init__``)."""

    _name = ""
    # String keys whose value may be the word 'off': YAML 1.1 (PyYAML) reads a bare off/no/false as False.
    _off_keys = ()

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is False and f.name in self._off_keys:
                value = "off"
            ok, coerced = _coerce(value, hints[f.name])
            _require(ok, f"{self._name}.{f.name}",
                     f"expected {_type_name(hints[f.name])}, got {type(value).__name__} {value!r}",
                     f"write a {_type_name(hints[f.name])}")
            object.__setattr__(self, f.name, coerced)
        self.check()

    def check(self):
        """Value checks beyond types; raise ``ConfigError``."""


def _type_name(tp):
    if typing.get_origin(tp) is tuple:
        return f"list of {typing.get_args(tp)[0].__name__}"
    return tp.__name__


def _coerce(value, tp):
    """Return (ok, value converted to ``tp``). Ints are accepted for floats, lists for tuples; no other casts."""
    if typing.get_origin(tp) is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            return False, value
        inner = typing.get_args(tp)[0]
        items = [_coerce(v, inner) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, tp), value


@dataclass(frozen=True)
class DataConfig(_Section):
    """Training data and augmentation (``data:`` section)."""
    _name = "data"
    rec: str = ""
    min_images_per_identity: int = 0
    batch_size: int = 128
    num_workers: int = 2
    decode_cache_mb: int = 2048
    flip: bool = True
    rotation: float = 0.0
    crop_scale: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    def check(self):
        _require(self.min_images_per_identity >= 0, "data.min_images_per_identity", "must be >= 0", "use 0 (keep all)")
        _require(self.batch_size >= 1, "data.batch_size", "must be >= 1", "use the per-device batch, e.g. 128")
        _require(self.num_workers >= 0, "data.num_workers", "must be >= 0", "use 0 (in-process) or more")
        _require(self.decode_cache_mb >= 0, "data.decode_cache_mb", "must be >= 0", "use 0 (decode every time)")
        _require(0.0 <= self.rotation <= 180.0, "data.rotation", "must be in [0, 180] degrees", "e.g. 15")
        _require(0.0 < self.crop_scale <= 1.0, "data.crop_scale", "must be in (0, 1]", "1.0 disables the crop")
        for k in ("brightness", "contrast", "saturation"):
            _require(0.0 <= getattr(self, k) < 1.0, f"data.{k}", "must be in [0, 1)", "0 disables it, e.g. 0.2")


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Backbone (``model:`` section); the names are those of ``gluonface.models.list_models()``."""
    _name = "model"
    name: str = "iresnet50"
    embedding_size: int = 512
    head: str = "E"
    dropout: float = 0.0
    input_norm: bool = True

    def check(self):
        _require(self.name != "", "model.name", "is empty", "name a backbone from `gluonface flops --list`")
        _require(self.embedding_size >= 2, "model.embedding_size", "must be >= 2", "e.g. 512")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)", "e.g. 0.0 or 0.4")


@dataclass(frozen=True)
class LossConfig(_Section):
    """Margin loss (``loss:`` section): target logit s·(cos(m1·θ + m2) − m3)."""
    _name = "loss"
    name: str = "arcface"
    s: float = 64.0
    m1: float = 1.0
    m2: float = 0.5
    m3: float = 0.0
    easy_margin: bool = False
    sub_centers: int = 1
    partial_fc: bool = False
    sample_rate: float = 1.0

    def check(self):
        _require(self.s > 0, "loss.s", "must be > 0", "e.g. 64")
        _require(self.m1 > 0, "loss.m1", "must be > 0", "1.0 for ArcFace/CosFace")
        _require(0.0 <= self.m2 < 3.14159, "loss.m2", "must be in [0, pi)", "e.g. 0.5 (ArcFace)")
        _require(0.0 <= self.m3 < 1.0, "loss.m3", "must be in [0, 1)", "e.g. 0.35 (CosFace) or 0")
        _require(self.sub_centers >= 1, "loss.sub_centers", "must be >= 1", "1 (plain) or 3 (sub-center ArcFace)")
        _require(0.0 < self.sample_rate <= 1.0, "loss.sample_rate", "must be in (0, 1]",
                 "1.0 (no sampling) or e.g. 0.1 with partial_fc")


@dataclass(frozen=True)
class OptimConfig(_Section):
    """Optimiser and learning-rate schedule (``optim:`` section); epochs are converted to steps."""
    _name = "optim"
    name: str = "sgd"
    lr: float = 0.1
    base_batch: int = 512
    scale_lr: bool = True
    momentum: float = 0.9
    wd: float = 5e-4
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    no_wd_bn_bias: bool = False
    clip_gradient: float = 0.0
    schedule: str = "step"
    warmup_epochs: float = 0.0
    lr_steps: Tuple[float, ...] = (8.0, 14.0)
    lr_factor: float = 0.1
    poly_power: float = 1.0
    final_lr: float = 0.0

    def check(self):
        _one_of(self.name, ("sgd", "adamw"), "optim.name")
        _one_of(self.schedule, ("constant", "step", "cosine", "poly"), "optim.schedule")
        _require(self.lr > 0, "optim.lr", "must be > 0", "e.g. 0.1 for SGD, 0.001 for AdamW")
        _require(self.base_batch >= 1, "optim.base_batch", "must be >= 1", "the global batch that lr is quoted for")
        _require(0.0 <= self.momentum < 1.0, "optim.momentum", "must be in [0, 1)", "e.g. 0.9")
        _require(self.wd >= 0, "optim.wd", "must be >= 0", "e.g. 5e-4")
        _require(0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0, "optim.beta1/beta2", "must be in [0, 1)",
                 "e.g. 0.9 and 0.999")
        _require(self.clip_gradient >= 0, "optim.clip_gradient", "must be >= 0", "0 disables clipping")
        _require(self.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0", "e.g. 0 or 1")
        _require(list(self.lr_steps) == sorted(self.lr_steps) and all(e > 0 for e in self.lr_steps),
                 "optim.lr_steps", "must be increasing positive epochs", "e.g. [8, 14]")
        _require(self.schedule != "step" or len(self.lr_steps) > 0, "optim.lr_steps",
                 "is empty but optim.schedule is 'step'", "list the decay epochs, e.g. [8, 14], or pick another schedule")
        _require(0.0 < self.lr_factor <= 1.0, "optim.lr_factor", "must be in (0, 1]", "e.g. 0.1")
        _require(self.poly_power > 0, "optim.poly_power", "must be > 0", "1.0 is a linear decay")
        _require(0.0 <= self.final_lr < self.lr, "optim.final_lr", "must be in [0, optim.lr)", "e.g. 0")


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Run length, devices, precision, logging and checkpoints (``train:`` section)."""
    _name = "train"
    _off_keys = ("amp",)
    epochs: float = 20.0
    max_steps: int = 0
    devices: str = "cpu"
    amp: str = "off"
    seed: int = 2048
    run_dir: str = ""
    hybridize: bool = True
    log_every: int = 20
    progress_bar: bool = True
    checkpoint_every: int = 2000
    checkpoint_at_epoch_end: bool = True
    keep_checkpoints: int = 3

    def check(self):
        _require(self.epochs > 0, "train.epochs", "must be > 0", "e.g. 20")
        _require(self.max_steps >= 0, "train.max_steps", "must be >= 0", "0 means epochs × steps per epoch")
        _require(self.devices in ("cpu", "gpu") or self.devices.startswith(("gpu:", "cpu:")),
                 "train.devices", f"'{self.devices}' is not a device list",
                 "use cpu, cpu:N (N batch slices), gpu (all) or gpu:0,1")
        _one_of(self.amp, ("off", "bf16", "fp16", "auto"), "train.amp")
        _require(self.seed >= 0, "train.seed", "must be >= 0", "e.g. 2048")
        _require(self.log_every >= 1, "train.log_every", "must be >= 1", "e.g. 20")
        _require(self.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0", "0 = epoch ends only")
        _require(self.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1", "e.g. 3")


@dataclass(frozen=True)
class DistConfig(_Section):
    """Distribution engine (``dist:`` section), read by ``gluonface.parallel.init_dist``."""
    _name = "dist"
    engine: str = "local"
    kvstore: str = "device"
    update_on_kvstore: bool = False
    compression: str = "none"
    elastic: bool = False
    min_workers: int = 1
    commit_every: int = 0

    def check(self):
        _one_of(self.engine, ("local", "kvstore", "horovod"), "dist.engine")
        _one_of(self.kvstore, ("device", "local", "dist_sync", "dist_device_sync", "dist_async"), "dist.kvstore")
        _one_of(self.compression, ("none", "fp16", "2bit"), "dist.compression")
        _require(self.min_workers >= 1, "dist.min_workers", "must be >= 1", "e.g. 1")
        _require(self.commit_every >= 0, "dist.commit_every", "must be >= 0",
                 "use 0 (commit at every checkpoint) or a positive number of steps")


@dataclass(frozen=True)
class EvalConfig(_Section):
    """Verification during training (``eval:`` section)."""
    _name = "eval"
    bins: Tuple[str, ...] = ()
    every: int = 2000
    batch_size: int = 64
    flip: bool = True
    nfolds: int = 10
    best_by: str = ""

    def check(self):
        _require(self.every >= 0, "eval.every", "must be >= 0", "0 = only at the end of training")
        _require(self.batch_size >= 1, "eval.batch_size", "must be >= 1", "e.g. 64")
        _require(self.nfolds >= 2, "eval.nfolds", "must be >= 2", "10 is the LFW protocol")
        names = [bin_name(b) for b in self.bins]
        _require(self.best_by == "" or self.best_by in names, "eval.best_by",
                 f"'{self.best_by}' is not one of the eval.bins names {names}",
                 "name a set from eval.bins by its file stem, or leave it empty (the first set)")


def bin_name(path):
    """The name a verification set is logged under: its file stem (``/data/lfw.bin`` → ``lfw``)."""
    return os.path.splitext(os.path.basename(path))[0]


SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "optim": OptimConfig,
                 "train": TrainConfig, "dist": DistConfig, "eval": EvalConfig}

# Keys that do not change the training trajectory: a run may be resumed with them changed.
NON_TRAJECTORY_KEYS = {
    "data": {"num_workers", "decode_cache_mb"},
    "dist": {"commit_every"},
    "train": {"max_steps", "run_dir", "log_every", "progress_bar", "checkpoint_every", "keep_checkpoints",
              "checkpoint_at_epoch_end"},
    "eval": {"bins", "every", "batch_size", "flip", "nfolds", "best_by"},
}


@dataclass(frozen=True)
class Config:
    """The resolved experiment; pass sections (``cfg.optim``), not the whole object, to library code."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    source: str = ""

    def to_dict(self):
        """Plain ``{section: {key: value}}`` (tuples as lists), suitable for YAML/JSON."""
        return {s: {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(getattr(self, s)).items()}
                for s in SECTIONS}

    def trajectory_hash(self):
        """sha256 (16 hex) of every key that changes the training trajectory; resume refuses a mismatch."""
        d = self.to_dict()
        for s, keys in NON_TRAJECTORY_KEYS.items():
            for k in keys:
                d[s].pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _read_yaml(path):
    import yaml
    if not os.path.isfile(path):
        raise GluonFaceError(f"config file '{path}' does not exist; fix: pass the path of a YAML experiment "
                             "file, e.g. configs/tiny_synthetic.yaml")
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise GluonFaceError(f"config file '{path}' is not valid YAML ({exc}); fix: correct the syntax") from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise GluonFaceError(f"config file '{path}' must be a mapping of sections; fix: write `section:` blocks "
                             f"({', '.join(SECTIONS)})")
    return doc


def _merge(values, origins, doc, origin):
    """Fold one YAML document's sections into ``values`` ({section: {key: value}}), recording origins."""
    for section, body in doc.items():
        if section not in SECTION_TYPES:
            raise GluonFaceError(f"unknown config section '{section}' in {origin}; fix: use one of "
                                 f"{', '.join(SECTIONS)}")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise GluonFaceError(f"config section '{section}' in {origin} must be a mapping of keys; "
                                 f"fix: write `{section}:` followed by indented `key: value` lines")
        known = [f.name for f in dataclasses.fields(SECTION_TYPES[section])]
        for key, value in body.items():
            if key not in known:
                import difflib
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean '{section}.{close[0]}'?" if close else f"known keys: {', '.join(known)}"
                raise GluonFaceError(f"unknown config key '{section}.{key}' in {origin}; fix: remove it or "
                                     f"correct the spelling ({hint})")
            values[section][key] = value
            origins[f"{section}.{key}"] = origin


def parse_override(text):
    """``'optim.lr=0.2'`` → ``('optim', 'lr', 0.2)``; the value is parsed as YAML (numbers, bools, lists)."""
    import yaml
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise GluonFaceError(f"--set '{text}' is not section.key=value; fix: e.g. --set optim.lr=0.2")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return section, key, value


def build_config(values, origins=None, source=""):
    """Build a validated ``Config`` from ``{section: {key: value}}``; errors name the origin of the key."""
    origins = origins or {}
    sections = {}
    for name, cls in SECTION_TYPES.items():
        try:
            sections[name] = cls(**values.get(name, {}))
        except ConfigError as exc:
            where = origins.get(exc.key) or _first_origin(origins, name) or "the defaults"
            raise GluonFaceError(f"config key '{exc.key}' (set in {where}): {exc.problem}; fix: {exc.fix}") from None
    return Config(source=source, **sections)


def _first_origin(origins, section):
    return next((o for k, o in origins.items() if k.startswith(section + ".")), None)


def load_config(path, overrides=()):
    """Load an experiment file over its ``base:`` file and apply ``--set`` overrides.

    Args:
        path: the experiment YAML. A top-level ``base: base.yaml`` (relative to the file) is loaded first;
            only one level is allowed.
        overrides: iterable of ``'section.key=value'`` strings, applied last.
    Returns:
        a frozen ``Config``; ``Config.source`` is ``path``.
    """
    values = {s: {} for s in SECTIONS}
    origins = {}
    doc = _read_yaml(path)
    base = doc.pop("base", None)
    if base is not None:
        base_path = os.path.join(os.path.dirname(os.path.abspath(path)), str(base))
        base_doc = _read_yaml(base_path)
        if "base" in base_doc:
            raise GluonFaceError(f"'{base_path}' (the base of '{path}') has its own `base:`; fix: only one "
                                 "level of inheritance is allowed, state the values in the base file")
        _merge(values, origins, base_doc, base_path)
    _merge(values, origins, doc, path)
    parsed = [parse_override(o) for o in overrides]
    for section, key, value in parsed:
        _merge(values, origins, {section: {key: value}}, f"--set {section}.{key}")
    return build_config(values, origins, source=path)


def config_from_dict(doc, origin="config.yaml"):
    """Rebuild a ``Config`` from ``Config.to_dict()`` output (extra top-level keys such as ``derived`` ignored)."""
    values = {s: {} for s in SECTIONS}
    origins = {}
    _merge(values, origins, {s: doc.get(s) for s in SECTIONS if s in doc}, origin)
    return build_config(values, origins, source=origin)


def save_config(cfg, path, derived=None):
    """Write the resolved config (all sections) plus ``derived:`` numbers as YAML, atomically."""
    import yaml
    doc = cfg.to_dict()
    if derived:
        doc["derived"] = dict(derived)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# resolved from {cfg.source or '(defaults)'}; trajectory hash {cfg.trajectory_hash()}\n")
        yaml.safe_dump(doc, f, sort_keys=False, default_flow_style=None)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
