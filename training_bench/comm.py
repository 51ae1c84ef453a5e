"""Collective communication micro-benchmarks, with algorithm and bus bandwidth as nccl-tests defines them.

algbw = S / t, where S is the size nccl-tests reports for the collective (the full buffer for all-reduce
and broadcast, the gathered/total size for all-gather, reduce-scatter and all-to-all, the message for
send/recv). busbw = algbw x factor, the factor that makes it comparable to link bandwidth:
all-reduce 2(n-1)/n; all-gather, reduce-scatter, all-to-all (n-1)/n; broadcast and send/recv 1.
"""

from __future__ import annotations

import os
import re
import time

import torch
import torch.distributed as dist

from training_bench.errors import BenchError

OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all", "send_recv")
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def bus_factor(op: str, n: int) -> float:
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    if op in ("broadcast", "send_recv"):
        return 1.0
    raise BenchError(f"unknown collective {op!r}; choose from {', '.join(OPS)}")


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", text.upper())
    if not m:
        raise BenchError(f"bad size {text!r}: write e.g. 1K, 64M or 1G")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_sizes(text: str) -> list[int]:
    """'1K-1G' (powers of two from 1K to 1G) or '1M,16M,256M'."""
    if "-" in text:
        lo, hi = (parse_size(x) for x in text.split("-", 1))
        if lo > hi:
            raise BenchError(f"bad size range {text!r}: the first size must not exceed the second")
        sizes, s = [], lo
        while s <= hi:
            sizes.append(s)
            s *= 2
        return sizes
    return [parse_size(x) for x in text.split(",") if x.strip()]


def init_from_env() -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise BenchError("communication benchmarks need several processes: run under torchrun, e.g. "
                         "torchrun --nproc-per-node 2 -m training_bench micro comm")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


def _collective(op: str, nbytes: int, world: int, rank: int, device: torch.device):
    elems = max(1, nbytes // 4)
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        elems = max(world, elems - elems % world)
    full = torch.rand(elems, device=device)
    part = torch.rand(elems // world, device=device) if op in ("all_gather", "reduce_scatter") else None
    out = torch.empty_like(full)
    size = elems * 4
    if op == "all_reduce":
        return (lambda: dist.all_reduce(full)), size
    if op == "all_gather":
        return (lambda: dist.all_gather_into_tensor(out, part)), size
    if op == "reduce_scatter":
        return (lambda: dist.reduce_scatter_tensor(part, full)), size
    if op == "broadcast":
        return (lambda: dist.broadcast(full, src=0)), size
    if op == "all_to_all":
        return (lambda: dist.all_to_all_single(out, full)), size
    if op == "send_recv":
        if world < 2:
            raise BenchError("send_recv needs 2 processes")

        def sendrecv():
            if rank == 0:
                dist.send(full, dst=1)
            elif rank == 1:
                dist.recv(out, src=0)

        return sendrecv, size
    raise BenchError(f"unknown collective {op!r}; choose from {', '.join(OPS)}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_collective(op: str, nbytes: int, rank: int, world: int, device: torch.device, warmup: int = 5,
                     iters: int = 20) -> dict:
    """Time `iters` back-to-back calls after a barrier; the slowest rank's time counts (as nccl-tests)."""
    fn, size = _collective(op, nbytes, world, rank, device)
    for _ in range(warmup):
        fn()
    _sync(device)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    elapsed = torch.tensor([(time.perf_counter() - t0) / iters], dtype=torch.float64,
                           device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    t = float(elapsed.item())
    algbw = size / t / 1e9
    return {"op": op, "bytes": size, "time_us": t * 1e6, "algbw_gbs": algbw,
            "busbw_gbs": algbw * bus_factor(op, world), "bus_factor": bus_factor(op, world), "world": world,
            "backend": dist.get_backend()}
