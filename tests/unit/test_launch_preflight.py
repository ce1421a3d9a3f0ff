"""`gluonface launch` mistakes are clear errors before any process starts."""
import socket
import subprocess
import sys

import pytest

from gluonface.errors import GluonFaceError
from gluonface.launch.job import LaunchRequest, launch
from gluonface.launch.preflight import check_kvstore_type, check_port_free, free_port


def _config(tmp_path, rec):
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{rec: {rec}}}\n" if rec else "train: {max_steps: 1}\n")
    return str(path)


def test_missing_rec_is_named_before_start(tmp_path):
    req = LaunchRequest(config=_config(tmp_path, tmp_path / "nope" / "train"), engine="kvstore", workers=2,
                        log_dir=str(tmp_path / "logs"))
    with pytest.raises(GluonFaceError, match="missing on 127.0.0.1"):
        launch(req, echo=None)
    assert not (tmp_path / "logs").exists()   # nothing was started


def test_existing_rec_prefix_passes_and_dry_run_prints_plan(tmp_path, capsys):
    (tmp_path / "train.rec").write_bytes(b"")
    req = LaunchRequest(config=_config(tmp_path, tmp_path / "train"), engine="kvstore", workers=2, servers=2,
                        dry_run=True, port=free_port())
    assert launch(req, echo=sys.stdout) == 0
    out = capsys.readouterr().out
    for name in ("scheduler", "server-0", "server-1", "worker-0", "worker-1"):
        assert f"{name} @ 127.0.0.1" in out
    assert "DMLC_ROLE=worker" in out and "dist.engine=kvstore" in out


def test_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        with pytest.raises(GluonFaceError, match="in use"):
            check_port_free(s.getsockname()[1])


@pytest.mark.parametrize("name,match", [("horovod", "single-process"), ("device", "not a distributed")])
def test_kvstore_type(name, match):
    with pytest.raises(GluonFaceError, match=match):
        check_kvstore_type(name)


def test_wrong_combinations(tmp_path):
    cfg = _config(tmp_path, None)
    with pytest.raises(GluonFaceError, match="Horovod feature"):
        launch(LaunchRequest(config=cfg, engine="kvstore", workers=2, elastic=True), echo=None)
    hosts = tmp_path / "hosts"
    hosts.write_text("a slots=1\nb slots=1\n")
    with pytest.raises(GluonFaceError, match="--interface"):
        launch(LaunchRequest(config=cfg, engine="horovod", workers=2, hosts_file=str(hosts), starter="netns"),
               echo=None)
    hosts.write_text("a slots=1\nb sluts=1\n")
    with pytest.raises(GluonFaceError, match=":2: cannot read"):
        launch(LaunchRequest(config=cfg, engine="horovod", workers=2, hosts_file=str(hosts)), echo=None)


def test_cli_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gluonface", "launch", _config(tmp_path, tmp_path / "x"),
                           "--engine", "horovod", "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: training data") and "Traceback" not in proc.stderr


def test_versions_probe_runs_on_each_host():
    from gluonface.launch.hostfile import Host
    from gluonface.launch.preflight import check_versions_match
    from gluonface.launch.starters import LocalStarter
    check_versions_match([Host("127.0.0.1"), Host("localhost")], LocalStarter(), sys.executable)
    with pytest.raises(GluonFaceError, match="cannot run"):
        check_versions_match([Host("127.0.0.1")], LocalStarter(), "/nonexistent/python")
