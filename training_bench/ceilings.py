"""The device's measured ceilings: a large GEMM (compute) and a device-to-device copy (memory bandwidth)."""

from __future__ import annotations

import torch

from training_bench import flops as fl
from training_bench.timing import measure


def gemm_ceiling(device: torch.device, dtype: torch.dtype, n: int, warmup: int = 5, reps: int = 30) -> dict:
    a = torch.randn(n, n, device=device, dtype=torch.float32).to(dtype)
    b = torch.randn(n, n, device=device, dtype=torch.float32).to(dtype)
    # Timed like the operators (short bursts), so fractions of it compare like with like; a sustained
    # multi-second GEMM runs slower on a power-capped GPU (see results/README.md).
    t = measure([lambda: a @ b], device, warmup, reps)
    return {"op": f"gemm {n}x{n}x{n}", "dtype": str(dtype).replace("torch.", ""), **t.as_dict(),
            "tflops": 2 * n**3 / t.median_s / 1e12}


def copy_ceiling(device: torch.device, nbytes: int, warmup: int = 5, reps: int = 30) -> dict:
    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    t = measure([lambda: dst.copy_(src)], device, warmup, reps)
    return {"op": f"copy {nbytes / 2**20:.0f} MiB", **t.as_dict(),
            "gbs": fl.copy(nbytes)[1] / t.median_s / 1e9, "counts": "read + write"}
