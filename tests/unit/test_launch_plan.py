"""Hostfiles and pure launch plans: exact environments, placement, validation."""
import shlex

import pytest

from gluonface.errors import GluonFaceError
from gluonface.launch.hostfile import Host, parse_hosts_text, to_horovod_hosts
from gluonface.launch.plan import horovodrun_argv, plan_horovod, plan_kvstore, train_argv
from gluonface.launch.starters import NetnsStarter, SrunStarter, SshStarter, get_starter

HOSTFILE = """
# two nodes

node01 slots=2          # trailing comment
node02:3
node03 slots=1 port=2222 addr=10.0.0.3
"""


def test_hostfile_formats():
    hosts = parse_hosts_text(HOSTFILE)
    assert hosts == [Host("node01", 2), Host("node02", 3), Host("node03", 1, "10.0.0.3", 2222)]
    assert hosts[2].address == "10.0.0.3" and hosts[0].address == "node01"
    assert to_horovod_hosts(hosts) == "node01:2,node02:3,node03:1"


@pytest.mark.parametrize("line,match", [
    ("node01 slots=x", "not an integer"),
    ("node01 slots=0", "out of range"),
    ("node01 slot=2", "cannot read"),
    ("node01 port=70000", "out of range"),
    ("node01;rm -rf / slots=1", "not a valid host name"),
    ("$(reboot) slots=1", "not a valid host name"),
    ("-oProxyCommand=x slots=1", "not a valid host name"),
    ("node01 addr=a;b", "not a valid host name"),
    ("node01\nnode01 slots=2", "listed twice"),
    ("# only a comment\n\n", "no hosts"),
])
def test_hostfile_errors_name_the_line(line, match):
    with pytest.raises(GluonFaceError, match=match) as err:
        parse_hosts_text(line, "hf")
    if "no hosts" not in match:
        assert "hf:" in str(err.value)


def test_kvstore_plan_exact_environment():
    hosts = [Host("a", 1, "10.0.0.1"), Host("b", 2, "10.0.0.2")]
    specs = plan_kvstore(("python", "-m", "gluonface", "train", "c.yaml"), hosts, workers=3, servers=2,
                         port=9091, interface="eth0", env={"OMP_NUM_THREADS": "1"}, python="py")
    assert [(s.name, s.role, s.host.name) for s in specs] == [
        ("scheduler", "scheduler", "a"), ("server-0", "server", "a"), ("server-1", "server", "b"),
        ("worker-0", "worker", "a"), ("worker-1", "worker", "b"), ("worker-2", "worker", "b")]
    common = {"DMLC_PS_ROOT_URI": "10.0.0.1", "DMLC_PS_ROOT_PORT": "9091", "DMLC_NUM_SERVER": "2",
              "DMLC_NUM_WORKER": "3", "DMLC_INTERFACE": "eth0", "OMP_NUM_THREADS": "1"}
    assert specs[0].env == dict(common, DMLC_ROLE="scheduler", DMLC_NODE_HOST="10.0.0.1")
    assert specs[2].env == dict(common, DMLC_ROLE="server", DMLC_NODE_HOST="10.0.0.2")
    assert specs[5].env == dict(common, DMLC_ROLE="worker", DMLC_NODE_HOST="10.0.0.2",
                                GLUONFACE_LOCAL_RANK="1", GLUONFACE_WORKER_INDEX="2")
    assert specs[0].argv == ("py", "-m", "gluonface.parallel.server")
    assert specs[3].argv == ("python", "-m", "gluonface", "train", "c.yaml")


def test_plans_refuse_too_few_slots_and_servers():
    with pytest.raises(GluonFaceError, match="slots"):
        plan_kvstore(("x",), [Host("a", 1)], workers=2, servers=1, port=1)
    with pytest.raises(GluonFaceError, match="at least one server"):
        plan_kvstore(("x",), [Host("a", 2)], workers=2, servers=0, port=1)


def test_horovod_plan_uses_horovods_rank_assignment():
    hosts = [Host("h1", 2, "10.0.0.1"), Host("h2", 1, "10.0.0.2")]
    specs = plan_horovod(("t",), hosts, workers=3, rendezvous_addr="10.0.0.1", rendezvous_port=4444,
                         interface="hvd0")
    ranks = [(s.host.name, s.env["HOROVOD_RANK"], s.env["HOROVOD_LOCAL_RANK"], s.env["HOROVOD_LOCAL_SIZE"],
              s.env["HOROVOD_CROSS_RANK"], s.env["HOROVOD_CROSS_SIZE"]) for s in specs]
    assert ranks == [("h1", "0", "0", "2", "0", "2"), ("h1", "1", "1", "2", "0", "1"),
                     ("h2", "2", "0", "1", "1", "2")]
    e = specs[2].env
    assert (e["HOROVOD_SIZE"], e["HOROVOD_GLOO_RENDEZVOUS_ADDR"], e["HOROVOD_GLOO_RENDEZVOUS_PORT"],
            e["HOROVOD_GLOO_IFACE"], e["HOROVOD_CONTROLLER"], e["HOROVOD_HOSTNAME"]) == \
        ("3", "10.0.0.1", "4444", "hvd0", "gloo", "h2")


def test_train_and_horovodrun_argv():
    argv = train_argv("c.yaml", "kvstore", kvstore="dist_async", overrides=["optim.lr=0.1"], resume="auto",
                      python="py")
    assert argv == ("py", "-m", "gluonface", "train", "c.yaml", "--set", "optim.lr=0.1", "--set",
                    "dist.engine=kvstore", "--set", "dist.kvstore=dist_async", "--resume", "auto")
    hr = horovodrun_argv(("t",), [Host("a", 2), Host("b", 2)], workers=4, interface="ib0")
    assert hr == ("horovodrun", "--gloo", "-np", "4", "--start-timeout", "60", "--network-interface", "ib0",
                  "-H", "a:2,b:2", "t")
    el = horovodrun_argv(("t",), None, workers=2, elastic=True, min_workers=1, discovery_script="d.sh")
    assert el[-7:] == ("--min-np", "1", "--max-np", "2", "--host-discovery-script", "d.sh", "t")


def test_starters_never_build_shell_from_user_data():
    spec = plan_kvstore(("python", "train.py", "it's; $(x)"), [Host("n1", 1, port=2200)], workers=1,
                        servers=1, port=5)[-1]
    argv, _ = SshStarter(workdir="/w d").command(spec)
    assert argv[:8] == ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-p", "2200",
                        "n1"]
    remote = shlex.split(argv[8])   # what the remote shell will see, word by word
    assert remote[:5] == ["cd", "/w d", "&&", "exec", "env"]
    assert remote[-3:] == ["python", "train.py", "it's; $(x)"]
    assert "DMLC_ROLE=worker" in remote
    argv, env = NetnsStarter().command(spec)
    assert argv[:4] == ["ip", "netns", "exec", "n1"] and env["DMLC_ROLE"] == "worker"
    argv, _ = SrunStarter().command(spec)
    assert argv[:5] == ["srun", "-N1", "-n1", "-w", "n1"]
    with pytest.raises(GluonFaceError, match="not this machine"):
        get_starter("local").command(spec)
    with pytest.raises(GluonFaceError, match="unknown starter"):
        get_starter("telnet")


def test_multi_host_elastic_refuses_a_working_directory_horovodrun_would_not_quote(tmp_path, monkeypatch):
    import types

    from gluonface.launch.elastic_run import run_elastic
    spaced = tmp_path / "my runs"
    spaced.mkdir()
    monkeypatch.chdir(spaced)
    req = types.SimpleNamespace(min_workers=1, workers=2, interface="eth0", dry_run=True, timeout=None)
    hosts = [types.SimpleNamespace(name=f"node{i}", slots=1, address=f"10.0.0.{i}") for i in (1, 2)]
    with pytest.raises(GluonFaceError, match="without quoting"):
        run_elastic(req, hosts, ("python", "-m", "gluonface", "train", "c.yaml"), {}, str(tmp_path / "logs"), None)
