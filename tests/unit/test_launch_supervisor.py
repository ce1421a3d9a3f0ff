"""The supervisor with real (tiny) processes: fail fast, name the dead one, leave nothing behind."""
import os
import re
import sys

import pytest

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


BEATING = ("import os, sys, time\n"
           "from gluonface.parallel.heartbeat import start_heartbeat\n"
           "hb = start_heartbeat()\n"
           "hb.set_rank({rank}, 2)\n"
           "hb.training(0)\n"
           "for step in range(1, 100000):\n"
           "    time.sleep(0.05)\n"
           "    hb.stepped(step)\n"
           "    {then}\n")


def test_a_stopped_worker_is_a_stall_named_with_its_step(tmp_path):
    import signal
    specs = [_py("worker-0", "worker", BEATING.format(rank=0, then="pass")),
             _py("worker-1", "worker", BEATING.format(rank=1, then="step == 40 and os.kill(os.getpid(), "
                                                                   "signal.SIGSTOP)").replace(
                 "import os,", "import os, signal,"))]
    result = supervise(specs, LocalStarter(), log_dir=str(tmp_path), timeout=120, echo=None, stall_timeout=2)
    assert (result.returncode, result.failed) == (124, "worker-1")
    assert re.search(r"stalled: no heartbeat for \d+ s \(last at step (3\d|40), phase train\)", result.message)
    assert "worker-0 at step" in result.message
    pids = [v["pid"] for v in __import__("json").loads((tmp_path / "processes.json").read_text()).values()]
    assert all(_gone(pid) for pid in pids)   # the stopped one too (SIGCONT + SIGKILL)
    assert "@gluonface-heartbeat" not in (tmp_path / "worker-0.log").read_text()


def test_the_reason_comes_from_the_failed_heartbeat(tmp_path):
    code = ("from gluonface.parallel.heartbeat import start_heartbeat\n"
            "from gluonface.parallel.failure import report_and_exit\n"
            "hb = start_heartbeat()\n"
            "try:\n"
            "    raise RuntimeError('disk on fire\\nsecond line: the one that counts')\n"
            "except RuntimeError as exc:\n"
            "    report_and_exit(exc, hb)\n")
    specs = [_py("worker-0", "worker", "import time; time.sleep(300)"), _py("worker-1", "worker", code)]
    result = supervise(specs, LocalStarter(), log_dir=str(tmp_path), timeout=120, echo=None)
    assert result.failed == "worker-1" and result.returncode == 1
    assert "died: exit code 1 (RuntimeError: second line: the one that counts)" in result.message


def test_processes_that_left_their_group_are_swept_by_the_job_tag(tmp_path):
    """Horovod runs workers in sessions of their own: a process group signal misses them."""
    pidfile = tmp_path / "escaped.pid"
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
            "time.sleep(0.5); sys.exit(5)\n")
    result = supervise([_py("worker-0", "worker", code)], LocalStarter(), log_dir=str(tmp_path / "l"),
                       timeout=120, echo=None, grace=1.0)
    assert result.returncode == 5
    assert _gone(int(pidfile.read_text()))


@pytest.mark.parametrize("sign", ["epipe", "stdin-eof"])
def test_a_worker_whose_launcher_died_leaves_by_itself(tmp_path, sign):
    """The heartbeat's dead-man switch ends the process and its children: EPIPE on the output pipe, or end of
    file on stdin (what crosses ssh: its client keeps running when its stdout breaks)."""
    import signal
    import subprocess as sp
    import time
    script = ("import multiprocessing as mp, os, sys, time\n"
              "from gluonface.parallel.heartbeat import start_heartbeat\n"
              "def child():\n"
              "    time.sleep(300)\n"
              "c = mp.get_context('fork').Process(target=child, daemon=True); c.start()\n"
              f"open({str(tmp_path / 'pids')!r}, 'w').write(f'{{os.getpid()}} {{c.pid}}')\n"
              "hb = start_heartbeat()\n"
              "time.sleep(300)\n")
    pipes = ("stderr=subprocess.PIPE" if sign == "epipe" else
             f"stdin=subprocess.PIPE, stderr=open({str(tmp_path / 'err')!r}, 'w')")
    launcher = sp.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                         f"subprocess.Popen([sys.executable, '-c', {script!r}], {pipes}, "
                         "env=dict(__import__('os').environ, GLUONFACE_HEARTBEAT='0.2'))\n"
                         "time.sleep(300)\n"])
    deadline = time.monotonic() + 60
    while not (tmp_path / "pids").exists() or len((tmp_path / "pids").read_text().split()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker, child = map(int, (tmp_path / "pids").read_text().split())
    launcher.send_signal(signal.SIGKILL)   # no teardown runs: the read end of the worker's pipe closes
    launcher.wait()
    deadline = time.monotonic() + 20
    while not (_gone(worker) and _gone(child)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(worker) and _gone(child)


def test_error_line_of_the_output():
    from gluonface.launch.supervisor import error_from_output
    assert error_from_output(["Traceback (most recent call last):", '  File "x.py", line 1', "ValueError: bad",
                              "Exit code: 2", "Process 0 exit with status code 2."]) == "ValueError: bad"
    assert error_from_output(["[1]<stderr>:mxnet.base.MXNetError: Check failed"]) == \
        "mxnet.base.MXNetError: Check failed"
    assert error_from_output(["error: the rec is missing; fix: pack it", "bye"]).startswith("error: the rec")
    assert error_from_output(["KeyboardInterrupt"]) == "KeyboardInterrupt"
    assert error_from_output(["all fine", "Exit code: 2"]) is None
