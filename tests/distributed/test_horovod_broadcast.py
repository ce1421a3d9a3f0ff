"""gluonface's Horovod broadcasts survive the race that crashes Horovod 0.28.1's own broadcast.

``horovod_enqueue_delay.c`` (LD_PRELOADed) pauses every thread that leaves Horovod's tensor queue, the point
where a preempted engine thread sits when a rank crashes with ``Segmentation fault: 11`` in its first
broadcasts (gluonface.parallel.horovod_ops). With that pause Horovod's ``broadcast_`` crashes every time:
the control run, which shows the pause opens the window. gluonface's allreduce-based broadcasts, under the
same pause, deliver rank 0's values bit for bit (a NaN and a -0.0 included).
"""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.distributed]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MARK = "gf-enqueue-delay"


@pytest.fixture(scope="module")
def injector(tmp_path_factory):
    lib = tmp_path_factory.mktemp("inject") / "horovod_enqueue_delay.so"
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(lib),
                    os.path.join(HERE, "horovod_enqueue_delay.c"), "-ldl"], check=True)
    return str(lib)


def _run(mode, out, injector):
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    env = dict(os.environ, LD_PRELOAD=injector, GF_ENQUEUE_DELAY_US="20000", GF_ENQUEUE_DELAY_MARK="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable,
                           os.path.join(HERE, "horovod_bcast_worker.py"), "--mode", mode, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=180)


def _load(out, rank):
    with open(out / f"rank{rank}.pkl", "rb") as f:
        return pickle.load(f)


def test_horovod_broadcast_crashes_when_the_enqueue_is_delayed(tmp_path, injector):
    proc = _run("horovod", tmp_path / "out", injector)
    log = proc.stdout + proc.stderr
    assert MARK in log                       # the pause happened
    assert proc.returncode != 0 and "Segmentation fault" in log, \
        f"Horovod's broadcast survived the widened window: has the pinned Horovod changed?\n{log[-3000:]}"


def test_gluonface_broadcasts_are_exact_under_the_same_delay(tmp_path, injector):
    out = tmp_path / "out"
    proc = _run("gluonface", out, injector)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert log.count(MARK) >= 2 * 3 * 3      # 2 ranks x 3 rounds x (parameters, object size, object bytes)
    r0, r1 = _load(out, 0), _load(out, 1)
    assert set(r0) == set(r1) and len(r0) == 3 * 9   # 8 parameters and an object per round
    for key, value in r0.items():
        if key.endswith(".object"):
            assert r1[key] == value == {"rank": 0, "round": int(key[5]), "pad": ""}
        else:
            assert value.dtype == r1[key].dtype and value.tobytes() == r1[key].tobytes(), key
    (conv,) = [k for k in r1 if k.startswith("round0.") and k.endswith("conv0_weight")]
    weight = r1[conv].reshape(-1)
    assert np.signbit(weight[0]) and weight[0] == 0 and np.isnan(weight[1]) and np.isinf(weight[2])
