"""Stand-in hosts for multi-host tests: Linux network namespaces joined by a veth pair.

Each namespace gets an address on a private /24 and an ``/etc/netns/<ns>/hosts`` (which ``ip netns exec``
mounts over ``/etc/hosts``) that resolves every namespace name to its address, like a cluster's DNS, and
this machine's host name to the namespace's own address (Horovod 0.28.1 binds one Gloo context to whatever
the host name resolves to). Everything is removed on exit, whatever happened.
"""
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time

import pytest


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def unique_tag():
    """A short tag for names that must not clash with other tests running at the same time."""
    return f"{os.getpid() % 10000}{random.randint(0, 99)}"


def _hosts_text(names, addrs, own):
    lines = ["127.0.0.1 localhost", f"{own} {socket.gethostname()}"]
    lines += [f"{addr} {name}" for name, addr in zip(names, addrs)]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def linked_namespaces(names, tag):
    """Create two network namespaces ``names`` joined by a veth pair (``gfnet0`` in each).

    Skips the calling test (never fails it) when namespaces cannot be made here (no root, no iproute2,
    a sandbox without netns support).

    Yields:
        the namespaces' IPv4 addresses, in the order of ``names``.
    """
    if len(names) != 2:
        raise ValueError("linked_namespaces joins exactly two namespaces")
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2 (ip); not available here")
    subnet = f"10.231.{random.randint(1, 250)}"
    addrs = [f"{subnet}.1", f"{subnet}.2"]
    created = []
    try:
        for ns in names:
            res = _ip("netns", "add", ns)
            if res.returncode != 0:
                pytest.skip(f"cannot create network namespace {ns} here: {res.stderr.strip()}")
            created.append(ns)
        v0, v1 = f"v{tag}a", f"v{tag}b"
        steps = [("link", "add", v0, "type", "veth", "peer", "name", v1),
                 ("link", "set", v0, "netns", names[0]), ("link", "set", v1, "netns", names[1])]
        for ns, veth, addr in zip(names, (v0, v1), addrs):
            steps += [("-n", ns, "link", "set", veth, "name", "gfnet0"),
                      ("-n", ns, "addr", "add", f"{addr}/24", "dev", "gfnet0"),
                      ("-n", ns, "link", "set", "lo", "up"), ("-n", ns, "link", "set", "gfnet0", "up")]
        for step in steps:
            res = _ip(*step)
            if res.returncode != 0:
                pytest.skip(f"cannot set up veth networking ({' '.join(step)}): {res.stderr.strip()}")
        for ns, addr in zip(names, addrs):
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/hosts", "w") as f:
                f.write(_hosts_text(names, addrs, addr))
        yield addrs
    finally:
        stop_processes_in(created)
        for ns in created:
            _ip("netns", "del", ns)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def on_host(ns, argv, *, hostname=None, binds=(), daemon=False):
    """The argv that runs ``argv`` as if on host ``ns``, the way everything of the real-tool tests runs there.

    Inside the namespace's network (and its ``/etc/netns/<ns>`` files over ``/etc``, which ``ip netns exec``
    mounts), in a new UTS namespace whose host name is ``hostname`` (default: ``ns``), and in a private mount
    namespace with each ``(source, target)`` of ``binds`` bind-mounted: one path, a different directory on
    each host, the way each cluster node has its own ``/run/munge``. Every child inherits all of it.
    ``daemon``: the process gets SIGTERM when the test process dies, even by SIGKILL (every wrapper execs in
    place, so the parent-death signal reaches the daemon itself).
    """
    flat = [path for pair in binds for path in map(str, pair)]
    script = ('h=$1; n=$2; shift 2; while [ "$n" -gt 0 ]; do mount --bind "$1" "$2" || exit 126; shift 2; '
              'n=$((n-1)); done; hostname "$h" && exec "$@"')
    prefix = ["setpriv", "--pdeathsig", "TERM", "--"] if daemon else []
    return prefix + ["ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "--", "/bin/sh", "-c", script,
                     "on_host", hostname or ns, str(len(binds)), *flat, *map(str, argv)]


def processes_in(names):
    """Pids of live processes whose network namespace is one of the namespaces ``names``."""
    inodes = set()
    for ns in names:
        with contextlib.suppress(OSError):
            inodes.add(f"net:[{os.stat(f'/var/run/netns/{ns}').st_ino}]")
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/net") in inodes and alive(pid):
                found.append(int(pid))
        except OSError:
            continue
    return found


def alive(pid):
    """True if process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_processes_in(names, grace=3.0):
    """SIGKILL every process still inside the namespaces ``names`` (a test's or daemon's leftovers) and wait
    up to ``grace`` seconds for them to go, so deleting the namespaces really frees them. Returns the pids."""
    pids = processes_in(names)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while processes_in(names) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids
