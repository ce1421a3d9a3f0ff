"""Fixtures of the multi-host tests: network namespaces as hosts, and the real sshd / SLURM running on them.

``ssh_hosts`` (function scope): two hosts with a real sshd each, reachable from each other with ``ssh NAME``;
usable as ``gluonface launch --hosts HOSTFILE`` when the launcher runs on the first host:
``subprocess.run(ssh_hosts.on(0, ["python", "-m", "gluonface", "launch", ..., "--hosts", ssh_hosts.hostfile]))``.
``slurm`` (module scope): a two-node SLURM cluster (see real_slurm.py). Both skip, naming the install
command, where the tools are missing, except under CI (``CI=true``, set by ``.ci/run``), where they fail.
"""
import os

import pytest

import real_slurm
import real_sshd
from netns_hosts import linked_namespaces, unique_tag


def _need(reason):
    """Skip the test for ``reason`` (a missing tool) on a user's machine; CI installs the tools, so fail there."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must install it: .ci/run)")
    pytest.skip(reason)


def _names():
    tag = unique_tag()
    return tag, [f"gf{tag}n1", f"gf{tag}n2"]   # names end in digits, as cluster nodes' do


@pytest.fixture
def two_hosts(tmp_path):
    """Two namespaces ``gf<tag>n1``/``gf<tag>n2``.

    Yields:
        (names, addrs, hostfile): hostfile lists both with ``slots=1 addr=...``.
    """
    tag, names = _names()
    with linked_namespaces(names, tag) as addrs:
        hostfile = tmp_path / "hosts"
        hostfile.write_text(f"{names[0]} slots=1 addr={addrs[0]}\n{names[1]} slots=1 addr={addrs[1]}\n")
        yield names, addrs, hostfile


@pytest.fixture
def ssh_hosts(tmp_path):
    """Two namespace hosts, each running a real sshd (``real_sshd.SshHosts``: names, addrs, hostfile, on())."""
    _need(real_sshd.missing())
    tag, names = _names()
    with linked_namespaces(names, tag) as addrs:
        base = tmp_path / "sshd"
        base.mkdir()
        with real_sshd.sshd_hosts(names, addrs, base) as hosts:
            yield hosts


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running two-node SLURM cluster (``real_slurm.SlurmCluster``), shared by the tests of a module."""
    _need(real_slurm.missing())
    tag, names = _names()
    with linked_namespaces(names, tag) as addrs:
        with real_slurm.slurm_cluster(f"gf{tag}", names, addrs, tmp_path_factory.mktemp("slurm")) as cluster:
            yield cluster
