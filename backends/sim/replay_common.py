"""What both replays share: the requests they return, and the arrivals they meet (drawn once)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from backends.sim.config import SimConfig
from backends.sim.roofline import memory_plan

# Products and sums of whole numbers are exact in binary64 below this: the step cost's attention FLOPs are such a
# sum in any order only while they stay under it.
_EXACT_INTEGERS = 2**53


@dataclass(frozen=True)
class ReplayedRequest:
    arrival_s: float
    ttft_s: float
    e2el_s: float
    output_tokens: int
    before_inference_s: float = 0.0  # sent until first scheduled (vLLM's e2e - inference, plus the client's hop)
    input_tokens: int = 0

    @property
    def tpot_s(self) -> float | None:
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else None


class _NotExact(Exception):
    """The totals cannot reproduce the step-by-step arithmetic here: replay falls back to replay_stepwise."""


@dataclass
class _Workload:
    """Who is sent when, drawn once so that both replays meet the same arrivals."""

    num_requests: int
    arrivals: list[tuple[float, int]]  # heap of (sent, index)
    sent: dict[int, float]
    lengths: list[tuple[int, int]] | None
    input_len: int
    output_len: int

    def length_of(self, i: int) -> tuple[int, int]:
        return self.lengths[i % len(self.lengths)] if self.lengths is not None else (self.input_len, self.output_len)


def _workload(config: SimConfig, input_len: int, output_len: int, num_requests: int, qps: float | None,
              concurrency: int | None, seed: int, send_times: list[float] | None,
              lengths: list[tuple[int, int]] | None) -> _Workload:
    if sum(x is not None for x in (qps, concurrency, send_times)) != 1:
        raise ValueError("give one of qps, concurrency, send_times")
    if lengths is not None and not lengths:
        raise ValueError("lengths, when given, needs at least one (input, output) pair")
    rng = np.random.default_rng(seed)
    arrivals: list[tuple[float, int]] = []
    sent: dict[int, float] = {}
    if send_times is not None:
        num_requests = len(send_times)
        for i, t in enumerate(sorted(send_times)):
            sent[i] = t
            heapq.heappush(arrivals, (t, i))
    elif qps is not None:
        t = 0.0
        for i in range(num_requests):
            t += rng.exponential(1.0 / qps)
            sent[i] = t
            heapq.heappush(arrivals, (t, i))
    else:
        for i in range(min(concurrency, num_requests)):
            sent[i] = 0.0
            heapq.heappush(arrivals, (0.0, i))
    work = _Workload(num_requests, arrivals, sent, lengths, input_len, output_len)
    # a request that can never fit the KV cache would wait at the head of the queue forever
    plan = memory_plan(config.model, config.gpu, config.tp, config.gpu_memory_utilization)
    blocks = plan.kv_capacity_tokens // config.block_size
    for p, m in (set(lengths) if lengths is not None else {(input_len, output_len)}):
        if num_requests and -(-(p + m) // config.block_size) > blocks:
            raise ValueError(f"a request of {p} + {m} tokens needs more than the {plan.kv_capacity_tokens} tokens of "
                             f"KV cache the engine has; shorten it or give the engine more memory")
    return work
