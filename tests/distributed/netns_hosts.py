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
import socket
import subprocess

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
        for ns in created:
            _ip("netns", "del", ns)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
