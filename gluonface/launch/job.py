"""``launch(request)``: pre-flight, plan, start, supervise (or render SLURM / Kubernetes files instead)."""
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional, Tuple

from gluonface.errors import GluonFaceError
from gluonface.launch import plan as planning
from gluonface.launch import preflight
from gluonface.launch.hostfile import local_hosts, parse_hostfile
from gluonface.launch.starters import get_starter

# Small thread pools: several processes share each machine's cores (override in the environment).
DEFAULT_ENV = {"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"}


@dataclass(frozen=True)
class LaunchRequest:
    """Everything ``gluonface launch`` was asked to do (see ``gluonface launch --help``)."""
    config: str
    engine: str
    workers: int
    servers: int = 1
    kvstore: str = "dist_sync"
    hosts_file: Optional[str] = None
    starter: Optional[str] = None
    overrides: Tuple[str, ...] = ()
    interface: Optional[str] = None
    port: Optional[int] = None
    timeout: Optional[float] = None
    stall_timeout: Optional[float] = None   # None: derived from the step time; 0: no stall detection
    resume: Optional[str] = None
    elastic: bool = False
    min_workers: int = 1
    slurm: Optional[str] = None
    submit: bool = False
    k8s: Optional[str] = None
    image: str = "gluonface:latest"
    log_dir: Optional[str] = None
    dry_run: bool = False
    command: Optional[Tuple[str, ...]] = None   # replaces `python -m gluonface train ...` (custom scripts)
    python: Optional[str] = None


def launch(req: LaunchRequest, echo=sys.stderr):
    """Run (or render) the job described by ``req``; returns the process exit code (0 = success)."""
    if req.engine not in ("kvstore", "horovod"):
        raise GluonFaceError(f"--engine {req.engine!r}; fix: use kvstore or horovod")
    if req.stall_timeout is not None and req.stall_timeout < 0:
        raise GluonFaceError(f"--stall-timeout {req.stall_timeout:g}; fix: give seconds (0 turns stall "
                             "detection off; leave it out to derive it from the step time)")
    cfg = _load_config(req)
    if req.slurm or req.k8s:
        from gluonface.launch.render import render
        return render(req, cfg, echo=echo)
    hosts = parse_hostfile(req.hosts_file) if req.hosts_file else local_hosts(req.workers)
    starter = get_starter(req.starter or ("ssh" if req.hosts_file else "local"))
    command = req.command or planning.train_argv(
        req.config, req.engine, kvstore=req.kvstore if req.engine == "kvstore" else None,
        overrides=req.overrides, resume=req.resume, python=req.python)
    data = getattr(getattr(cfg, "data", None), "rec", "") if cfg else ""
    preflight.check_file_on_hosts(data, hosts, starter)
    if starter.name == "ssh" and not req.dry_run:
        preflight.check_versions_match(hosts, starter, req.python or sys.executable)
    env = {k: os.environ.get(k, v) for k, v in DEFAULT_ENV.items()}
    log_dir = req.log_dir or _default_log_dir(cfg)
    if req.engine == "kvstore":
        return _run_kvstore(req, hosts, starter, command, env, log_dir, echo)
    return _run_horovod(req, hosts, starter, command, env, log_dir, echo)


def _load_config(req):
    if req.command is not None and not os.path.exists(req.config):
        return None   # a custom command need not read a gluonface config
    from gluonface.config import load_config
    return load_config(req.config, req.overrides)


def _default_log_dir(cfg):
    run_dir = getattr(getattr(cfg, "train", None), "run_dir", "") if cfg else ""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(run_dir, "launch", stamp) if run_dir else os.path.join("launch-logs", stamp)


def _run_kvstore(req, hosts, starter, command, env, log_dir, echo):
    preflight.check_kvstore_type(req.kvstore)
    preflight.check_dist_kvstore_built()
    if req.elastic:
        raise GluonFaceError("--elastic is a Horovod feature (ps-lite cannot replace a dead worker mid-step); "
                             "fix: --engine horovod, or rely on --resume auto after a failure")
    root = hosts[0]
    port = req.port or preflight.free_port()
    if starter.name == "local" and req.port:
        preflight.check_port_free(port, root.address)
    specs = planning.plan_kvstore(command, hosts, workers=req.workers, servers=req.servers, port=port,
                                  interface=req.interface, env=env, python=req.python)
    return _supervise(req, specs, starter, log_dir, echo)


def _run_horovod(req, hosts, starter, command, env, log_dir, echo):
    preflight.check_horovod()
    if req.elastic:
        from gluonface.launch.elastic_run import run_elastic
        return run_elastic(req, hosts, command, env, log_dir, echo)
    if len(hosts) > 1 and not req.interface:
        raise GluonFaceError("a multi-host Horovod job needs the network interface its hosts share; fix: pass "
                             "--interface (e.g. eth0, ib0)")
    from horovod.runner.http.http_server import RendezvousServer
    rendezvous = RendezvousServer()
    port = rendezvous.start()   # Horovod's own HTTP rendezvous; binds every interface, free port
    try:
        rendezvous.init(planning.horovod_slots(hosts, req.workers))
        specs = planning.plan_horovod(command, hosts, workers=req.workers, rendezvous_addr=hosts[0].address,
                                      rendezvous_port=port, interface=req.interface or "lo", env=env)
        return _supervise(req, specs, starter, log_dir, echo)
    finally:
        rendezvous.stop()


def _supervise(req, specs, starter, log_dir, echo):
    from gluonface.launch.supervisor import supervise
    if req.dry_run:
        for spec in specs:
            argv, _ = starter.command(spec)
            env = " ".join(f"{k}={v}" for k, v in sorted(spec.env.items()))
            print(f"{spec.name} @ {spec.host.name}: {env} {' '.join(argv)}", file=echo)
        return 0
    from gluonface.launch.supervisor import Terminated
    try:
        result = supervise(specs, starter, log_dir=log_dir, timeout=req.timeout, echo=echo,
                           stall_timeout=req.stall_timeout)
    except Terminated:
        print("gluonface launch: terminated by SIGTERM; every process of the job was stopped", file=echo)
        return 143
    print(f"gluonface launch: {result.message} (logs: {log_dir})", file=echo)
    return result.returncode
