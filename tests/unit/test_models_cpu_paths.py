"""Every backbone trains (forward + backward) on this CPU, whichever oneDNN code path it takes.

MXNet 1.9.1's oneDNN picks kernels and memory layouts by instruction set: on AVX-512 CPUs convolutions emit
channels-last tensors where AVX2 CPUs emit blocked ones, and some bugs live on one path only (MobileFaceNet's
head crashed with a segmentation fault on AVX-512 machines, see ``models.layers.conv_bn``). A crash kills the
process, so each network runs in a child interpreter and the test reports which one died and how.
``MXNET_ENGINE_TYPE=NaiveEngine`` runs every operator on one thread: oneDNN's per-thread primitive caches then
see every layer, which is how the head's crash reproduces deterministically.
"""
import os
import signal
import subprocess
import sys
import textwrap

import mxnet as mx
import pytest

from gluonface.models import get_model, list_models

pytestmark = pytest.mark.cpu_paths   # run again on the AVX2 code path (pytest.ini)

# Deep variants share every block class with a fast representative; they still run here, marked slow.
BIG = {"iresnet50", "iresnet100", "iresnet200", "gluoncv:resnet50_v1b", "gluoncv:resnet101_v1b"}

_CHILD = textwrap.dedent("""
    import sys, numpy as np, mxnet as mx
    from gluonface.models import get_model
    for case in sys.argv[1:]:   # name,batch,size,hybrid,steps, one after another in this process
        name, batch, size, hybrid, steps = case.split(",")
        batch, size, hybrid, steps = int(batch), int(size), hybrid == "1", int(steps)
        print("start", case, flush=True)
        net = get_model(name, input_size=size)
        net.initialize(mx.init.Xavier(magnitude=2))
        if hybrid:
            net.hybridize(static_alloc=True, static_shape=True)
        x = mx.nd.array(np.random.default_rng(0).uniform(0, 255, size=(batch, 3, size, size)))
        for step in range(steps):   # a second step reuses cached primitives and the static allocation
            with mx.autograd.record():
                e = net(x)
                loss = (e * e).mean()
            loss.backward()
        grads = {k: p.grad().asnumpy() for k, p in net.collect_params().items() if p.grad_req != "null"}
        bad = [k for k, g in grads.items() if not np.isfinite(g).all()]
        assert not bad, (case, bad)
        if batch > 1:  # at batch 1 a training-mode BatchNorm on (1, C) outputs its beta: no gradient flows back
            assert sum(float(np.abs(g).sum()) > 0 for g in grads.values()) > 0.9 * len(grads), case
        infer = net(x).asnumpy()           # inference mode after training mode
        assert infer.shape == (batch, 512) and np.isfinite(infer).all(), case
        print("ok", case, flush=True)
""")


def _run_child(cases, engine="ThreadedEnginePerDevice", timeout=900):
    """Run ``cases`` ((name, batch, size, hybrid, steps) tuples) in one child; a crash names its case."""
    env = dict(os.environ, MXNET_ENGINE_TYPE=engine, OMP_NUM_THREADS="2")
    args = [",".join(str(int(v) if isinstance(v, bool) else v) for v in case) for case in cases]
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)
    how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
           else f"exit {proc.returncode}")
    started = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("start ")]
    done = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ok ")]
    assert proc.returncode == 0 and done == args, \
        f"engine={engine}: {how} in case {started[-1] if started else '?'} (name,batch,size,hybrid,steps)\n" \
        f"{proc.stderr[-3000:]}"


@pytest.mark.parametrize("name", list_models())
def test_no_batchnorm_sees_a_1x1_map(name):
    # The structural rule behind the AVX-512 crash fix: checked on the traced graph, so it holds on any CPU.
    sym = get_model(name)(mx.sym.var("data"))
    internals = sym.get_internals()
    _, shapes, _ = internals.infer_shape(data=(2, 3, 112, 112))
    by_name = dict(zip(internals.list_outputs(), shapes))
    import json
    graph = json.loads(sym.tojson())
    for node in graph["nodes"]:
        if node["op"] != "BatchNorm":
            continue
        src = graph["nodes"][node["inputs"][0][0]]
        shape = by_name[src["name"] + "_output"] if src["op"] != "null" else by_name[src["name"]]
        assert not (len(shape) == 4 and shape[2:] == (1, 1)), f"{node['name']} normalises a {shape} map"


@pytest.mark.parametrize("engine", ["NaiveEngine", "ThreadedEnginePerDevice"])
def test_mobilefacenet_trains_at_every_batch_size(engine):
    # batch 1 and 4, imperative and hybridized (static allocation), in one process per engine
    _run_child([("mobilefacenet", b, 112, hybrid, 2) for b in (1, 4) for hybrid in (False, True)], engine)


def test_every_backbone_trains_at_batch_2():
    # 56x56 keeps the deep nets quick; every map they normalise is still larger than 1x1 (checked above).
    _run_child([(n, 2, 56, True, 2) for n in list_models() if n not in BIG and n != "mobilefacenet"])


@pytest.mark.slow
def test_every_big_backbone_trains_at_batch_2():
    # One hybridized step: the imperative and repeated paths of their block types run in the test above.
    _run_child([(n, 2, 56, True, 1) for n in sorted(BIG)])
