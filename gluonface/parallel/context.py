"""Who am I in the job: the engine, rank, worker count and devices of this process.

``init_dist`` is the only place (with ``gluonface.launch``) that reads the environment. The launcher sets
the engines' own variables: ``DMLC_ROLE``/``DMLC_PS_ROOT_URI``/... for parameter servers (ps-lite) and
``HOROVOD_RANK``/``HOROVOD_SIZE``/... for Horovod (``horovodrun`` or Horovod's Gloo launcher). A process
started without either is a local job on one machine.

Note for parameter servers: a process with ``DMLC_ROLE=server`` or ``scheduler`` never gets here,
``import mxnet`` itself runs the server loop and exits (MXNet's ``kvstore_server`` module).
"""
import os
from dataclasses import dataclass, field
from typing import List, Optional

from gluonface.errors import GluonFaceError

ENGINES = ("local", "kvstore", "horovod")
LOCAL_KVSTORES = ("device", "local")
DIST_KVSTORES = ("dist_sync", "dist_device_sync", "dist_async")
# Names MXNet 1.9.1 accepts in mx.kv.create but silently turns into a single-process local store.
REFUSED_KVSTORES = ("horovod", "byteps")


class KVHandle:
    """The one ps-lite store of this process plus the integer keys handed out so far.

    Several trainers (backbone, classifier) and the metric collectives share one dist store, so each gets
    its own key range; every worker makes the same calls in the same order, so the ranges agree.
    """

    def __init__(self, store):
        self.store = store
        self._next_key = 0
        self.optimizer_owner = None   # the trainer that sent its optimizer to the servers, if any
        self.metric_keys = {}         # shape -> key used by collectives.allreduce_mean

    def allocate(self, count):
        """Reserve ``count`` consecutive keys; returns the first."""
        first = self._next_key
        self._next_key += int(count)
        return first


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly single-process) training job.

    Attributes:
        engine: 'local' | 'kvstore' | 'horovod'.
        rank: worker index in ``[0, num_workers)``.
        num_workers: number of worker processes (servers and the scheduler are not counted).
        local_rank: index of this worker on its host (picks the GPU under Horovod).
        ctx: the devices this worker computes on; the worker's batch is split over them.
        kvstore: the kvstore type ('device', 'local', 'dist_sync', ...) or None.
        update_on_kvstore: kvstore engine only: the servers run the optimizer.
        compression: 'none' | 'fp16' (Horovod) | '2bit' (kvstore).
        handle: engine state (the ps-lite store, key allocation); not part of equality.
    """
    engine: str
    rank: int = 0
    num_workers: int = 1
    local_rank: int = 0
    ctx: List = field(default_factory=list)
    kvstore: Optional[str] = None
    update_on_kvstore: bool = False
    compression: str = "none"
    handle: object = field(default=None, compare=False, repr=False)

    @property
    def is_main(self):
        """True on the one worker that writes logs, checkpoints and the run directory."""
        return self.rank == 0


def parse_devices(devices, local_rank=0, one_per_process=False):
    """Turn a device spec into a list of ``mx.Context``.

    Args:
        devices: 'cpu' (one CPU context), 'cpu:N' (``cpu(0)..cpu(N-1)``, N batch slices on the CPU),
            'gpu' (every visible GPU), 'gpu:0,1' or a list of GPU ids ``[0, 1]``.
        local_rank: this worker's index on its host.
        one_per_process: Horovod runs one device per process: pick GPU ``ids[local_rank]``.
    Returns:
        list of ``mx.Context``.
    """
    import mxnet as mx
    if isinstance(devices, int):
        devices = [devices]
    if isinstance(devices, str):
        spec = devices.strip().lower()
        if spec == "cpu":
            return [mx.cpu(0)]
        if spec.startswith("cpu:"):
            n = _positive_int(spec[4:], devices)
            if one_per_process and n > 1:
                raise GluonFaceError(f"devices {devices!r}: Horovod runs one device per process; "
                                     "fix: use 'cpu' and start more workers")
            return [mx.cpu(i) for i in range(n)]
        if spec == "gpu":
            ids = list(range(mx.context.num_gpus()))
        elif spec.startswith("gpu:"):
            ids = [_nonneg_int(s, devices) for s in spec[4:].split(",") if s.strip()]
        else:
            raise GluonFaceError(f"unknown devices {devices!r}; fix: use 'cpu', 'cpu:N', 'gpu', "
                                 "'gpu:0,1' or a list of GPU ids")
    else:
        ids = [_nonneg_int(i, devices) for i in devices]
    if not ids:
        raise GluonFaceError(f"devices {devices!r} names no GPU (mx.context.num_gpus() = "
                             f"{mx.context.num_gpus()}); fix: use 'cpu'")
    if one_per_process:
        ids = [ids[local_rank % len(ids)]]
    return [mx.gpu(i) for i in ids]


def _positive_int(text, spec):
    n = _nonneg_int(text, spec)
    if n < 1:
        raise GluonFaceError(f"devices {spec!r}: the count must be at least 1")
    return n


def _nonneg_int(text, spec):
    try:
        n = int(str(text).strip())
    except ValueError:
        raise GluonFaceError(f"devices {spec!r}: {text!r} is not an integer") from None
    if n < 0:
        raise GluonFaceError(f"devices {spec!r}: {n} is negative")
    return n


def engine_from_env(environ=None):
    """The engine the launcher started this process for: 'horovod', 'kvstore' or None."""
    env = os.environ if environ is None else environ
    if "HOROVOD_RANK" in env or "HOROVOD_SIZE" in env:
        return "horovod"
    if env.get("DMLC_ROLE") or env.get("DMLC_PS_ROOT_URI"):
        return "kvstore"
    return None


def resolve_engine(dist_cfg, environ=None):
    """Pick the engine and kvstore type from the config and the launcher's environment.

    Returns:
        (engine, kvstore) where kvstore is a type string or None.
    """
    cfg_engine = getattr(dist_cfg, "engine", "local") or "local"
    kvstore = getattr(dist_cfg, "kvstore", "device") or "device"
    if cfg_engine not in ENGINES:
        raise GluonFaceError(f"dist.engine={cfg_engine!r} is unknown; fix: use one of {', '.join(ENGINES)}")
    if kvstore in REFUSED_KVSTORES:
        raise GluonFaceError(
            f"dist.kvstore={kvstore!r}: MXNet 1.9.1's mx.kv.create({kvstore!r}) silently returns a "
            "single-process local store, so every worker would train alone; fix: set dist.engine=horovod "
            "(uses horovod.mxnet directly) or dist.kvstore=dist_sync")
    if kvstore not in LOCAL_KVSTORES + DIST_KVSTORES:
        raise GluonFaceError(f"dist.kvstore={kvstore!r} is unknown; fix: use one of "
                             f"{', '.join(LOCAL_KVSTORES + DIST_KVSTORES)}")
    env_engine = engine_from_env(environ)
    engine = cfg_engine
    if env_engine and cfg_engine == "local":
        engine = env_engine       # a plain config started by `gluonface launch`
    elif env_engine and env_engine != cfg_engine:
        raise GluonFaceError(f"dist.engine={cfg_engine!r} but this process was started by a {env_engine} "
                             f"launcher; fix: run `gluonface launch --engine {cfg_engine}` or set "
                             f"dist.engine={env_engine}")
    if engine == "kvstore":
        if kvstore in LOCAL_KVSTORES:
            kvstore = "dist_sync"
        if env_engine is None:
            raise GluonFaceError(f"dist.engine=kvstore ({kvstore}) needs the scheduler/server environment "
                                 "(DMLC_ROLE, DMLC_PS_ROOT_URI, ...); fix: start the job with "
                                 "`gluonface launch CONFIG --engine kvstore --workers N`")
    elif kvstore in DIST_KVSTORES:
        raise GluonFaceError(f"dist.kvstore={kvstore!r} needs dist.engine=kvstore (got {engine!r}); "
                             "fix: set dist.engine=kvstore or dist.kvstore=device")
    return engine, (kvstore if engine != "horovod" else None)


def init_dist(dist_cfg, devices="cpu"):
    """Build this process's ``DistContext`` from the config's ``dist`` section and the environment.

    Args:
        dist_cfg: the ``dist`` config section (attributes ``engine``, ``kvstore``, ``update_on_kvstore``,
            ``compression``; missing ones take their defaults).
        devices: see ``parse_devices``.
    Returns:
        DistContext. For 'kvstore' the dist store is created here (ps-lite connects to the scheduler);
        for 'horovod', ``hvd.init()`` has run.
    """
    engine, kvstore = resolve_engine(dist_cfg)
    compression = str(getattr(dist_cfg, "compression", "none") or "none")
    update_on_kv = bool(getattr(dist_cfg, "update_on_kvstore", False))
    _check_compression(engine, compression)
    if engine == "horovod":
        hvd = import_horovod()
        hvd.init()
        local_rank = hvd.local_rank()
        return DistContext("horovod", hvd.rank(), hvd.size(), local_rank,
                           parse_devices(devices, local_rank, one_per_process=True), None,
                           False, compression, KVHandle(None))
    if engine == "kvstore":
        import mxnet as mx
        if kvstore == "dist_async":
            update_on_kv = True   # MXNet refuses dist_async without a server-side optimizer
        store = mx.kv.create(kvstore)
        local_rank = int(os.environ.get("GLUONFACE_LOCAL_RANK", "0"))
        return DistContext("kvstore", store.rank, store.num_workers, local_rank,
                           parse_devices(devices, local_rank), kvstore, update_on_kv, compression,
                           KVHandle(store))
    ctx = parse_devices(devices)
    local_kv = kvstore if len(ctx) > 1 else None
    return DistContext("local", 0, 1, 0, ctx, local_kv, False, compression, KVHandle(None))


def _check_compression(engine, compression):
    allowed = {"local": ("none",), "kvstore": ("none", "2bit"), "horovod": ("none", "fp16")}[engine]
    if compression not in allowed:
        raise GluonFaceError(
            f"dist.compression={compression!r} is not available with engine {engine!r} (allowed: "
            f"{', '.join(allowed)}); fix: fp16 needs dist.engine=horovod, 2bit needs dist.engine=kvstore")


def import_horovod():
    """Import ``horovod.mxnet`` or explain how to get a build with the MXNet framework."""
    try:
        import horovod.mxnet as hvd
    except ImportError as exc:
        raise GluonFaceError(
            f"dist.engine=horovod but `import horovod.mxnet` failed ({exc}); fix: build Horovod against the "
            "installed MXNet: HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 pip install --no-build-isolation "
            "horovod==0.28.1 (or `make install`)") from None
    return hvd
