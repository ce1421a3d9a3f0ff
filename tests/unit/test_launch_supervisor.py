"""The supervisor with real (tiny) processes: fail fast, name the dead one, leave nothing behind."""
import os
import sys

from gluonface.launch.hostfile import Host
from gluonface.launch.plan import ProcSpec
from gluonface.launch.starters import LocalStarter
from gluonface.launch.supervisor import supervise

LOCAL = Host("127.0.0.1", 4)


def _py(name, role, code):
    return ProcSpec(name, role, LOCAL, (sys.executable, "-c", code), {"GF_TEST": name})


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] == "Z"


SPAWN_GRANDCHILD = ("import subprocess, time; p = subprocess.Popen(['sleep', '300']); "
                    "open({path!r}, 'w').write(str(p.pid)); time.sleep(300)")


def test_failure_tears_down_everything(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    specs = [
        _py("server-0", "server", "import time; time.sleep(300)"),
        _py("worker-0", "worker", SPAWN_GRANDCHILD.format(path=str(pidfile))),
        _py("worker-1", "worker", "import os, sys, time\n"
            f"while not os.path.exists({str(pidfile)!r}): time.sleep(0.05)\n"
            "print('env', os.environ['GF_TEST']); print('boom: out of cheese', flush=True); sys.exit(3)"),
    ]
    result = supervise(specs, LocalStarter(), log_dir=str(tmp_path / "logs"), timeout=120, echo=None)
    assert (result.returncode, result.failed) == (3, "worker-1")
    assert "boom: out of cheese" in result.message and "exit code 3" in result.message
    assert "env worker-1" in (tmp_path / "logs" / "worker-1.log").read_text()
    import json
    pids = [v["pid"] for v in json.loads((tmp_path / "logs" / "processes.json").read_text()).values()]
    pids.append(int(pidfile.read_text()))   # the grandchild, in worker-0's process group
    assert all(_gone(pid) for pid in pids)


def test_signal_death_is_named(tmp_path):
    specs = [_py("worker-0", "worker", "import time; time.sleep(300)"),
             _py("worker-1", "worker", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")]
    result = supervise(specs, LocalStarter(), log_dir=str(tmp_path), timeout=120, echo=None)
    assert result.failed == "worker-1" and "SIGKILL" in result.message
    assert result.returncode == 128 + 9


def test_success_waits_for_servers_then_stops_stragglers(tmp_path):
    specs = [_py("scheduler", "scheduler", "import time; time.sleep(300)"),
             _py("worker-0", "worker", "print('done')")]
    result = supervise(specs, LocalStarter(), log_dir=str(tmp_path), timeout=120, finish_grace=0.5, echo=None)
    assert result.returncode == 0 and "scheduler" in result.message
    specs = [_py("server-0", "server", "import time; time.sleep(0.3)"), _py("worker-0", "worker", "pass")]
    result = supervise(specs, LocalStarter(), log_dir=str(tmp_path / "b"), timeout=120, echo=None)
    assert (result.returncode, result.message) == (0, "all processes finished")


def test_hard_timeout(tmp_path):
    specs = [_py("worker-0", "worker", "import time; time.sleep(300)")]
    result = supervise(specs, LocalStarter(), log_dir=str(tmp_path), timeout=0.5, echo=None)
    assert result.returncode == 124 and "worker-0" in result.message and result.failed is None


def test_sigterm_to_the_launcher_stops_the_job(tmp_path):
    import json
    import signal
    import subprocess
    import time
    script = (
        "import sys\n"
        "from gluonface.launch.hostfile import Host\n"
        "from gluonface.launch.plan import ProcSpec\n"
        "from gluonface.launch.starters import LocalStarter\n"
        "from gluonface.launch.supervisor import supervise, Terminated\n"
        "spec = ProcSpec('worker-0', 'worker', Host('127.0.0.1'), (sys.executable, '-c', 'import time; time.sleep(300)'))\n"
        "try:\n"
        f"    supervise([spec], LocalStarter(), log_dir={str(tmp_path)!r}, timeout=300, echo=None)\n"
        "except Terminated:\n"
        "    sys.exit(143)\n")
    launcher = subprocess.Popen([sys.executable, "-c", script])
    table = tmp_path / "processes.json"
    while not table.exists():
        assert launcher.poll() is None
        time.sleep(0.05)
    pid = json.loads(table.read_text())["worker-0"]["pid"]
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=60) == 143
    assert _gone(pid)
