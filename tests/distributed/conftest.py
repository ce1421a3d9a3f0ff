"""Fixtures of the multi-host tests: two network namespaces as hosts, and a hostfile naming them."""
import pytest

from netns_hosts import linked_namespaces, unique_tag


@pytest.fixture
def two_hosts(tmp_path):
    """Two namespaces ``gf<tag>n1``/``gf<tag>n2`` (names end in digits, as cluster nodes' do).

    Yields:
        (names, addrs, hostfile): hostfile lists both with ``slots=1 addr=...``.
    """
    tag = unique_tag()
    names = [f"gf{tag}n1", f"gf{tag}n2"]
    with linked_namespaces(names, tag) as addrs:
        hostfile = tmp_path / "hosts"
        hostfile.write_text(f"{names[0]} slots=1 addr={addrs[0]}\n{names[1]} slots=1 addr={addrs[1]}\n")
        yield names, addrs, hostfile
