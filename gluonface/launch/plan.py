"""Launch plans: which processes to start, where, with which argv and exact environment. Pure functions.

The plans render the engines' own launch contracts, nothing new:

* parameter servers (ps-lite): one scheduler, S servers, W workers, told apart only by ``DMLC_ROLE``; all
  find the scheduler through ``DMLC_PS_ROOT_URI:DMLC_PS_ROOT_PORT`` and advertise ``DMLC_NODE_HOST``
  (always an explicit address: ps-lite's own guess picks whatever the host name resolves to);
* Horovod: workers with ``HOROVOD_RANK``/``SIZE``/``LOCAL_*``/``CROSS_*`` and the address of Horovod's
  own HTTP rendezvous server (``horovod.runner.http.http_server.RendezvousServer``), which the launcher
  runs; ranks come from Horovod's ``get_host_assignments``; or one ``horovodrun`` command (elastic jobs,
  SLURM and Kubernetes templates).
"""
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from gluonface.errors import GluonFaceError
from gluonface.launch.hostfile import Host, to_horovod_hosts, total_slots

SERVER_ENTRY = ("-m", "gluonface.parallel.server")


@dataclass(frozen=True)
class ProcSpec:
    """One process of a job.

    Attributes:
        name: unique and human-readable ('scheduler', 'server-0', 'worker-1', 'horovodrun').
        role: 'scheduler' | 'server' | 'worker' | 'launcher'.
        host: the ``Host`` it runs on.
        argv: the command, one argument per item (never joined into a shell string here).
        env: variables set on top of the launcher's environment.
    """
    name: str
    role: str
    host: Host
    argv: Tuple[str, ...]
    env: Dict[str, str] = field(default_factory=dict)


def train_argv(config, engine, *, kvstore=None, overrides=(), resume=None, python=None):
    """argv of one training worker: ``python -m gluonface train CONFIG --set ...``."""
    argv = [python or sys.executable, "-m", "gluonface", "train", str(config)]
    for item in overrides:
        argv += ["--set", item]
    argv += ["--set", f"dist.engine={engine}"]
    if kvstore:
        argv += ["--set", f"dist.kvstore={kvstore}"]
    if resume:
        argv += ["--resume", str(resume)]
    return tuple(argv)


def place_workers(hosts: List[Host], workers: int):
    """Fill hosts' slots in order; returns one ``(host, local_rank)`` per worker."""
    if workers < 1:
        raise GluonFaceError(f"--workers {workers}: need at least 1 worker")
    if total_slots(hosts) < workers:
        raise GluonFaceError(f"{workers} workers but the hosts have {total_slots(hosts)} slots; fix: add "
                             "hosts or slots=N to the hostfile, or start fewer workers")
    placed = []
    for host in hosts:
        for local in range(host.slots):
            if len(placed) < workers:
                placed.append((host, local))
    return placed


def plan_kvstore(command, hosts, *, workers, servers, port, interface=None, env=None, python=None):
    """Scheduler, servers and workers of a ps-lite job.

    Args:
        command: worker argv (e.g. ``train_argv(...)``).
        hosts: ``Host`` list; the scheduler runs on ``hosts[0]``, servers round-robin, workers fill slots.
        workers, servers: process counts (servers >= 1).
        port: the scheduler's port (``DMLC_PS_ROOT_PORT``).
        interface: optional NIC name (``DMLC_INTERFACE``).
        env: extra variables for every process.
    Returns:
        list of ``ProcSpec``: scheduler, servers, then workers in rank order.
    """
    if servers < 1:
        raise GluonFaceError(f"--servers {servers}: the kvstore engine needs at least one server")
    root = hosts[0].address
    common = dict(env or {})
    common.update({"DMLC_PS_ROOT_URI": root, "DMLC_PS_ROOT_PORT": str(int(port)),
                   "DMLC_NUM_SERVER": str(servers), "DMLC_NUM_WORKER": str(workers)})
    if interface:
        common["DMLC_INTERFACE"] = interface
    server_argv = (python or sys.executable,) + SERVER_ENTRY

    def spec(name, role, host, argv, **extra):
        e = dict(common, DMLC_ROLE=role, DMLC_NODE_HOST=host.address, **extra)
        return ProcSpec(name, role, host, tuple(argv), e)

    specs = [spec("scheduler", "scheduler", hosts[0], server_argv)]
    specs += [spec(f"server-{i}", "server", hosts[i % len(hosts)], server_argv) for i in range(servers)]
    for rank, (host, local) in enumerate(place_workers(hosts, workers)):
        # ps-lite assigns worker ranks itself (in connection order); GLUONFACE_* only names the process
        specs.append(spec(f"worker-{rank}", "worker", host, command, GLUONFACE_LOCAL_RANK=str(local),
                          GLUONFACE_WORKER_INDEX=str(rank)))
    return specs


def horovod_slots(hosts, workers):
    """Horovod's own rank assignment (``SlotInfo`` list) for ``workers`` processes on ``hosts``."""
    from horovod.runner.common.util.hosts import HostInfo, get_host_assignments
    place_workers(hosts, workers)   # same capacity check and message as the kvstore engine
    return get_host_assignments([HostInfo(h.name, h.slots) for h in hosts], workers)


def plan_horovod(command, hosts, *, workers, rendezvous_addr, rendezvous_port, interface, env=None):
    """Horovod workers (Gloo) that meet at Horovod's HTTP rendezvous server.

    Returns:
        list of ``ProcSpec`` in rank order.
    """
    by_name = {h.name: h for h in hosts}
    specs = []
    for slot in horovod_slots(hosts, workers):
        e = dict(env or {})
        e.update({
            "HOROVOD_HOSTNAME": slot.hostname, "HOROVOD_RANK": str(slot.rank),
            "HOROVOD_SIZE": str(slot.size), "HOROVOD_LOCAL_RANK": str(slot.local_rank),
            "HOROVOD_LOCAL_SIZE": str(slot.local_size), "HOROVOD_CROSS_RANK": str(slot.cross_rank),
            "HOROVOD_CROSS_SIZE": str(slot.cross_size),
            "HOROVOD_GLOO_RENDEZVOUS_ADDR": rendezvous_addr,
            "HOROVOD_GLOO_RENDEZVOUS_PORT": str(int(rendezvous_port)),
            "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo",
            "HOROVOD_GLOO_IFACE": interface,
        })
        specs.append(ProcSpec(f"worker-{slot.rank}", "worker", by_name[slot.hostname], tuple(command), e))
    return specs


def horovodrun_argv(command, hosts, *, workers, interface=None, elastic=False, min_workers=1,
                    discovery_script=None, start_timeout=60, hostfile=None):
    """One ``horovodrun --gloo`` command (elastic jobs; the SLURM and Kubernetes templates).

    ``hosts`` may be None when ``hostfile`` (already normalised) or ``discovery_script`` names them.
    """
    argv = ["horovodrun", "--gloo", "-np", str(workers), "--start-timeout", str(int(start_timeout))]
    if interface:
        argv += ["--network-interface", interface]
    if elastic:
        if not discovery_script:
            raise GluonFaceError("elastic Horovod needs a host discovery script")
        argv += ["--min-np", str(min_workers), "--max-np", str(workers),
                 "--host-discovery-script", str(discovery_script)]
    elif hostfile:
        argv += ["--hostfile", str(hostfile)]
    else:
        argv += ["-H", to_horovod_hosts(hosts)]
    return tuple(argv) + tuple(command)


def launcher_spec(argv, host: Optional[Host] = None, env=None):
    """A single supervising process (``horovodrun``) run on the launch host."""
    return ProcSpec("horovodrun", "launcher", host or Host("127.0.0.1"), tuple(argv), dict(env or {}))
