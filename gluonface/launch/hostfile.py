"""Hostfiles: one documented format, validated before anything is started.

Format (one host per line; ``#`` starts a comment; blank lines are ignored)::

    node01 slots=4                 # 4 worker processes on node01
    node02:4                       # the same, Horovod/MPICH spelling (``:N`` means slots, never a port)
    node03 slots=2 port=2222       # ssh port
    h1 slots=1 addr=10.231.0.1     # ``addr``: the address processes bind to and advertise (default: host)

``host`` is a host name, an IPv4 address or (for the netns starter) a network-namespace name. Names are
checked against a strict pattern so nothing from a hostfile can reach a shell as anything but a name.
"""
import ipaddress
import re
from dataclasses import dataclass
from typing import List, Optional

from gluonface.errors import GluonFaceError

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})$")
_KEYS = ("slots", "port", "addr")


@dataclass(frozen=True)
class Host:
    """One machine of the job.

    Attributes:
        name: what the starter uses to reach it (ssh/srun host name, or netns name).
        slots: worker processes it may run.
        addr: the address its processes bind to and advertise (defaults to ``name``).
        port: ssh port, or None for the default.
    """
    name: str
    slots: int = 1
    addr: Optional[str] = None
    port: Optional[int] = None

    @property
    def address(self):
        return self.addr or self.name


def validate_name(name, where="host"):
    """Return ``name`` if it is a plain host name / IPv4 address, else raise GluonFaceError."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise GluonFaceError(f"{where}: {name!r} is not a valid host name (letters, digits, '.', '-', '_'); "
                             "fix: write one plain host name or address per line")
    return name


def _validate_addr(addr, where):
    try:
        ipaddress.IPv4Address(addr)
    except ValueError:
        validate_name(addr, where)
    return addr


def parse_hosts_text(text, source="hostfile"):
    """Parse hostfile text (format in the module docstring).

    Returns:
        list of ``Host`` in file order (names unique).
    Raises:
        GluonFaceError naming ``source:line`` for any malformed line.
    """
    hosts, seen = [], set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        fields = line.split()
        head, opts = fields[0], {}
        if ":" in head:
            head, _, slots = head.partition(":")
            opts["slots"] = slots
        name = validate_name(head, where)
        for item in fields[1:]:
            key, eq, value = item.partition("=")
            if not eq or key not in _KEYS or not value:
                raise GluonFaceError(f"{where}: cannot read {item!r} in {raw.strip()!r}; fix: use "
                                     "'host slots=N [port=P] [addr=IP]' or 'host:N'")
            if key in opts:
                raise GluonFaceError(f"{where}: {key} given twice in {raw.strip()!r}")
            opts[key] = value
        if name in seen:
            raise GluonFaceError(f"{where}: host {name!r} listed twice; fix: one line per host with slots=N")
        seen.add(name)
        slots = _int(opts.get("slots", "1"), where, "slots", 1)
        port = _int(opts["port"], where, "port", 1) if "port" in opts else None
        addr = _validate_addr(opts["addr"], where) if "addr" in opts else None
        hosts.append(Host(name, slots, addr, port))
    if not hosts:
        raise GluonFaceError(f"{source}: no hosts; fix: add lines like 'node01 slots=2'")
    return hosts


def _int(text, where, key, minimum):
    try:
        value = int(text)
    except ValueError:
        raise GluonFaceError(f"{where}: {key}={text!r} is not an integer") from None
    if value < minimum or (key == "port" and value > 65535):
        raise GluonFaceError(f"{where}: {key}={value} is out of range")
    return value


def parse_hostfile(path):
    """Read and parse a hostfile (see ``parse_hosts_text``)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise GluonFaceError(f"cannot read hostfile {path}: {exc.strerror}; fix: pass an existing file to "
                             "--hosts") from None
    return parse_hosts_text(text, str(path))


def local_hosts(workers):
    """The one-machine job: every process on 127.0.0.1."""
    return [Host("127.0.0.1", workers)]


def total_slots(hosts: List[Host]):
    return sum(h.slots for h in hosts)


def to_horovod_hosts(hosts: List[Host]):
    """Normalised ``-H`` string for horovodrun (``name:slots,...``)."""
    return ",".join(f"{h.name}:{h.slots}" for h in hosts)
