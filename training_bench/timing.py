"""Timing done right: warm-up, many repetitions, median and spread, CUDA events on GPU, rotated inputs.

Inputs are rotated across enough copies that their total size exceeds the last-level cache, so a small
operator is not flattered by reading data the previous repetition left in cache.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

# Larger than any current GPU L2 (H100: 50 MB, H200: 60 MB) and typical CPU LLCs.
CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Timing:
    median_s: float
    p10_s: float
    p90_s: float
    min_s: float
    reps: int
    method: str

    def as_dict(self) -> dict:
        return {"median_ms": self.median_s * 1e3, "p10_ms": self.p10_s * 1e3, "p90_ms": self.p90_s * 1e3,
                "min_ms": self.min_s * 1e3, "reps": self.reps, "method": self.method}


def copies_for(bytes_per_call: int, cap: int = 64) -> int:
    """How many input sets to rotate through so that they do not all fit in cache."""
    if bytes_per_call <= 0:
        return 1
    return max(1, min(cap, -(-CACHE_BYTES // bytes_per_call)))


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def measure(calls: Sequence[Callable[[], object]], device: torch.device, warmup: int = 5, reps: int = 30,
            min_time_s: float = 0.0) -> Timing:
    """Time `calls` (one per rotated input set, used round-robin); each repetition is one call.

    On CUDA every repetition is bracketed by its own pair of events on the current stream; on CPU by
    perf_counter. Repetitions continue past `reps` until `min_time_s` has been spent, for stable medians.
    """
    n = len(calls)
    for i in range(warmup):
        calls[i % n]()
    if device.type == "cuda":
        # All repetitions are queued without synchronising, each after a write of CACHE_BYTES: the write
        # empties the L2 cache and keeps the GPU busy while the CPU enqueues the next call, so neither cached
        # inputs nor CPU launch overhead enter a repetition's events (the scheme of triton's do_bench).
        flush = torch.empty(CACHE_BYTES // 4, dtype=torch.int32, device=device)
        torch.cuda.synchronize(device)
        samples: list[float] = []
        spent = 0.0
        i = 0
        while i < reps or (spent < min_time_s and i < 100 * reps):
            batch = max(1, reps if i < reps else reps // 2)
            events = []
            for j in range(batch):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                flush.zero_()
                start.record()
                calls[(i + j) % n]()
                end.record()
                events.append((start, end))
            torch.cuda.synchronize(device)
            for start, end in events:
                dt = start.elapsed_time(end) / 1e3
                samples.append(dt)
                spent += dt
            i += batch
        del flush
        method = "CUDA events per repetition, queued back to back after an L2-flushing write"
    else:
        samples = []
        spent = 0.0
        i = 0
        while i < reps or (spent < min_time_s and i < 100 * reps):
            t0 = time.perf_counter()
            calls[i % n]()
            dt = time.perf_counter() - t0
            samples.append(dt)
            spent += dt
            i += 1
        method = "perf_counter"
    return Timing(statistics.median(samples), _quantile(samples, 0.1), _quantile(samples, 0.9), min(samples),
                  len(samples), method)
