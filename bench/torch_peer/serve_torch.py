"""A PyTorch training-step worker for interleaved benchmarks: reads 'run K' lines, answers JSON step times.

Usage (inside bench/.venv-torch): python bench/torch_peer/serve_torch.py --model iresnet50 --batch 32
Same network, loss and optimizer as bench_torch.py. 'quit' or end of input stops it.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import arcface  # noqa: E402
from models import MODELS  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=112)
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
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        times, cpu, loss = [], [], None
        for _ in range(int(cmd[1])):
            t, c = time.perf_counter(), time.process_time()
            loss = arcface(net(x), weight, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        print(json.dumps({"times": times, "cpu": cpu, "loss": float(loss.detach())}), flush=True)


if __name__ == "__main__":
    main()
