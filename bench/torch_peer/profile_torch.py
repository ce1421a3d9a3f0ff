"""Per-operator profile of one PyTorch training step (forward + ArcFace + backward + SGD), printed as JSON.

Usage (inside bench/.venv-torch): python bench/torch_peer/profile_torch.py --model iresnet50 --steps 2
Self CPU time per ATen operator, summed over the profiled steps and divided by their number.
"""
import argparse
import json
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import arcface  # noqa: E402
from models import MODELS  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--classes", type=int, default=1000)
    a = ap.parse_args()
    torch.manual_seed(0)
    net = MODELS[a.model]()
    weight = torch.nn.Parameter(torch.randn(a.classes, 512) * 0.01)
    params = [p for p in list(net.parameters()) + [weight] if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(a.batch, 3, a.size, a.size) * 255
    y = torch.randint(0, a.classes, (a.batch,))
    net.train()

    def step():
        loss = arcface(net(x), weight, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    wall = (time.perf_counter() - t) / a.steps
    ops = {e.key: e.self_cpu_time_total / 1e3 / a.steps for e in prof.key_averages() if e.self_cpu_time_total > 0}
    print(json.dumps({"framework": "torch", "model": a.model, "batch": a.batch, "threads": torch.get_num_threads(),
                      "step_ms": wall * 1e3, "ops_ms": ops}))


if __name__ == "__main__":
    main()
