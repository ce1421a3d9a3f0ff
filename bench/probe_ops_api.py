"""Evidence for gluonface/ops' notes on MXNet 1.9.1's extension library API (run after `make install`).

1. Engine: an imperative custom-op call returns before its kernel has run (asynchronous push), and the
   per-call dispatch cost on a tiny tensor, against a built-in element-wise op.
2. oneDNN layouts: oneDNN reorders executed in one step of conv → BN → [op] → conv, counted with
   MKLDNN_VERBOSE, with our op in the gap and with nothing in the gap, in training and in inference.

    OMP_NUM_THREADS=2 python bench/probe_ops_api.py
"""
import os
import subprocess
import sys
import time

LAYOUT_WORKER = """
import sys, mxnet as mx
from mxnet import autograd, gluon
from mxnet.gluon import nn
import gluonface.ops as ops
assert ops.native_active(), ops.status()
op, train = sys.argv[1], sys.argv[2] == 'train'
class Net(gluon.HybridBlock):
    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.conv = nn.Conv2D(64, 3, padding=1, use_bias=False); self.bn = nn.BatchNorm()
            self.alpha = self.params.get('alpha', shape=(64, 1, 1, 1), init=mx.init.Constant(0.25))
            self.conv2 = nn.Conv2D(64, 3, padding=1, use_bias=False)
    def hybrid_forward(self, F, x, alpha):
        y = self.bn(self.conv(x))
        if op == 'native':
            y = F._internal._gluonface_prelu(y, alpha)
        elif op == 'mxnet':
            y = y + F.Convolution(F.minimum(y, 0.0), alpha - 1.0, kernel=(1, 1), num_filter=64, num_group=64,
                                  no_bias=True)
        # alpha feeds the output in both arms, so both graphs have the same ops apart from the one probed
        return F.broadcast_add(self.conv2(y), 0 * F.sum(alpha))
net = Net(); net.initialize(); net.hybridize(static_alloc=True, static_shape=True)
x = mx.nd.random.normal(shape=(8, 64, 28, 28))
for i in range(3):
    if i == 2:
        print('=== measured step', flush=True)
    if train:
        with autograd.record():
            loss = net(x).sum()
        loss.backward()
    else:
        net(x)
    mx.nd.waitall()
"""


def count_reorders(op, mode):
    env = {**os.environ, "MKLDNN_VERBOSE": "1"}
    out = subprocess.run([sys.executable, "-c", LAYOUT_WORKER, op, mode], capture_output=True, text=True,
                         env=env, check=True).stdout
    lines = out.split("=== measured step", 1)[1].splitlines()
    reorders = [line.split(",") for line in lines if line.startswith("dnnl_verbose,exec") and ",reorder," in line]
    return len(reorders), sum(float(r[-1]) for r in reorders)


def engine_probe():
    import mxnet as mx
    import gluonface.ops as ops
    assert ops.native_active(), ops.status()
    x = mx.nd.random.normal(shape=(32, 64, 56, 56))
    a = mx.nd.ones((64, 1, 1, 1)) * 0.25
    mx.nd._internal._gluonface_prelu(x, a).wait_to_read()
    t0 = time.perf_counter()
    y = mx.nd._internal._gluonface_prelu(x, a)
    t1 = time.perf_counter()
    y.wait_to_read()
    t2 = time.perf_counter()
    tiny, ta = mx.nd.ones((1, 8, 1, 1)), mx.nd.ones((8, 1, 1, 1))
    per_call = {}
    for name, fn in [("_gluonface_prelu", lambda: mx.nd._internal._gluonface_prelu(tiny, ta)),
                     ("relu (built-in)", lambda: mx.nd.relu(tiny))]:
        for _ in range(50):
            fn().wait_to_read()
        t = time.perf_counter()
        for _ in range(500):
            fn().wait_to_read()
        per_call[name] = (time.perf_counter() - t) / 500 * 1e6
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, per_call


def main():
    push_ms, rest_ms, per_call = engine_probe()
    print(f"load average {os.getloadavg()[0]:.1f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}\n")
    print(f"engine: imperative call on (32, 64, 56, 56) returned after {push_ms:.2f} ms; "
          f"the result was ready {rest_ms:.2f} ms later (asynchronous push)")
    for name, us in per_call.items():
        print(f"call + wait on a (1, 8, 1, 1) tensor, {name}: {us:.1f} us")
    print("\noneDNN reorders in one step of conv → BN → [op] → conv, (8, 64, 28, 28): count, total ms")
    print("| mode | nothing between BN and conv | _gluonface_prelu | MXNet PReLU formulation |")
    print("|---|---|---|---|")
    for mode in ("train", "inference"):
        cells = ["%d, %.2f ms" % count_reorders(op, mode) for op in ("none", "native", "mxnet")]
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
