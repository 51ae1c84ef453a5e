"""A few seconds of bf16 matmul load on GPU 0, so a telemetry sample shows power and utilisation change.

    python benchmarks/gpu_load.py --seconds 6
Prints the achieved TFLOP/s (CUDA events) as JSON.
"""

import argparse
import json
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=6.0)
parser.add_argument("--n", type=int, default=8192)
args = parser.parse_args()
a = torch.randn(args.n, args.n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(args.n, args.n, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    a @ b
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
iters, t0 = 0, time.perf_counter()
start.record()
while time.perf_counter() - t0 < args.seconds:
    for _ in range(20):
        a @ b
    iters += 20
    torch.cuda.synchronize()
end.record()
torch.cuda.synchronize()
ms = start.elapsed_time(end)
print(json.dumps({"gpu": torch.cuda.get_device_name(), "n": args.n, "iterations": iters,
                  "tflops": 2 * args.n**3 * iters / (ms / 1e3) / 1e12}))
