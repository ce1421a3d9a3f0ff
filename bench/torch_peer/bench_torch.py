"""One PyTorch training-step measurement (forward + ArcFace loss + backward + SGD), printed as JSON.

Usage (inside bench/.venv-torch): python bench/torch_peer/bench_torch.py --model iresnet50 --dtype fp32
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import MODELS  # noqa: E402


def arcface(emb, weight, labels, s=64.0, m=0.5):
    cos = F.linear(F.normalize(emb.float()), F.normalize(weight)).clamp(-1, 1)
    target = cos.gather(1, labels[:, None])
    sin = torch.sqrt((1 - target * target).clamp_min(1e-6))
    th, mm = math.cos(math.pi - m), m * math.sin(m)
    new = torch.where(target > th, target * math.cos(m) - sin * math.sin(m), target - mm)
    logits = cos.scatter(1, labels[:, None], new) * s
    return F.cross_entropy(logits, labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    net = MODELS[a.model]()
    weight = torch.nn.Parameter(torch.randn(a.classes, 512) * 0.01)
    params = list(net.parameters()) + [weight]
    opt = torch.optim.SGD([p for p in params if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(a.batch, 3, a.size, a.size) * 255
    y = torch.randint(0, a.classes, (a.batch,))
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    net.train()
    times = []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            emb = net(x)
        loss = arcface(emb, weight, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    steady = sorted(times[a.warmup:])
    print(json.dumps({"framework": "torch", "model": a.model, "dtype": a.dtype, "batch": a.batch,
                      "threads": torch.get_num_threads(), "median_s": steady[len(steady) // 2],
                      "img_s": a.batch / steady[len(steady) // 2], "loss": float(loss)}))


if __name__ == "__main__":
    main()
