"""Inside an sbatch job: become this SLURM task's ps-lite role and exec it, or print this node's address.

``python -m gluonface.launch.slurm_role -- WORKER_ARGV...``: task 0 is the scheduler, tasks 1..S the
servers (``DMLC_NUM_SERVER``), the rest workers. ``DMLC_NODE_HOST`` is set to this node's address so
ps-lite never guesses one: the IPv4 address of ``DMLC_INTERFACE`` when the job names an interface, else
what this node's host name resolves to (refused if that is a loopback address in a multi-node job, the
Debian default ``127.0.1.1`` for instance, since the other nodes could never reach it). One line on
stderr names the task, its node and its role.

``python -m gluonface.launch.slurm_role --address``: print that address (the sbatch script runs it on
the first node to get the address the scheduler binds, ``DMLC_PS_ROOT_URI``).
"""
import fcntl
import ipaddress
import os
import socket
import struct
import sys

from gluonface.errors import GluonFaceError
from gluonface.launch.slurm import role_for_task, server_argv

_SIOCGIFADDR = 0x8915


def interface_address(name):
    """IPv4 address of network interface ``name`` on this machine (Linux)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError as exc:
            raise GluonFaceError(f"network interface {name!r} has no IPv4 address on {socket.gethostname()} "
                                 f"({exc.strerror}); fix: pass --interface with a NIC every node has "
                                 "(see `ip -4 addr`)") from None
    return socket.inet_ntoa(packed[20:24])


def node_address(environ=os.environ):
    """The address this node's ps-lite processes bind and advertise (see the module docstring)."""
    if environ.get("DMLC_INTERFACE"):
        return interface_address(environ["DMLC_INTERFACE"])
    host = socket.gethostname()
    addr = socket.gethostbyname(host)
    nodes = int(environ.get("SLURM_JOB_NUM_NODES", environ.get("SLURM_NNODES", "1")))
    if ipaddress.ip_address(addr).is_loopback and nodes > 1:
        raise GluonFaceError(f"host name {host} resolves to the loopback address {addr}, which the other "
                             f"{nodes - 1} node(s) cannot reach; fix: pass --interface (the NIC the nodes share)")
    return addr


def main(argv):
    try:
        if argv == ["--address"]:
            print(node_address())
            return
        if "--" not in argv or not argv[argv.index("--") + 1:]:
            sys.exit("usage: python -m gluonface.launch.slurm_role (--address | -- WORKER_ARGV...)")
        worker = argv[argv.index("--") + 1:]
        procid = int(os.environ["SLURM_PROCID"])
        role = role_for_task(procid, int(os.environ["DMLC_NUM_SERVER"]))
        os.environ["DMLC_ROLE"] = role
        if role != "scheduler":   # the scheduler binds DMLC_PS_ROOT_URI itself
            os.environ["DMLC_NODE_HOST"] = node_address()
    except GluonFaceError as exc:
        sys.exit(f"gluonface.launch.slurm_role: {exc}")
    os.environ.setdefault("GLUONFACE_LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    node = os.environ.get("SLURMD_NODENAME", socket.gethostname())
    print(f"gluonface.launch.slurm_role: slurm task {procid} on {node}: {role} "
          f"(DMLC_NODE_HOST={os.environ.get('DMLC_NODE_HOST', '-')})", file=sys.stderr, flush=True)
    target = worker if role == "worker" else server_argv(sys.executable)
    sys.stdout.flush()
    os.execvp(target[0], target)


if __name__ == "__main__":
    main(sys.argv[1:])
