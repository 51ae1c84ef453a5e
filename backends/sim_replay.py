"""The simulated engine replayed in virtual time: the same scheduler and step costs as the live sim, without HTTP
or sleeping, so a load point of thousands of requests is predicted in a fraction of a second. Used to fit and
check the sim against a measured engine (benchmarks/sim_validation.py).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from backends.sim import SimConfig
from backends.sim_scheduler import ContinuousBatchScheduler, SimRequest
from backends.roofline import memory_plan


@dataclass(frozen=True)
class ReplayedRequest:
    arrival_s: float
    ttft_s: float
    e2el_s: float
    output_tokens: int

    @property
    def tpot_s(self) -> float | None:
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else None


def replay(config: SimConfig, input_len: int, output_len: int, num_requests: int, qps: float | None = None,
           concurrency: int | None = None, seed: int = 0) -> list[ReplayedRequest]:
    """Poisson arrivals at `qps`, or a closed loop of `concurrency` users; fixed lengths. A request enters the
    scheduler `request_overhead_s` after it is sent (input processing), as in the live sim."""
    if (qps is None) == (concurrency is None):
        raise ValueError("give qps or concurrency")
    plan = memory_plan(config.model, config.gpu, config.tp, config.gpu_memory_utilization)
    sched = ContinuousBatchScheduler(plan.kv_capacity_tokens, config.block_size, config.max_num_seqs,
                                     config.max_batched_tokens)
    delay = config.cost.request_overhead_s
    rng = np.random.default_rng(seed)
    pending: list[tuple[float, int]] = []  # (time it reaches the scheduler, index)
    sent: dict[int, float] = {}
    if qps is not None:
        t = 0.0
        for i in range(num_requests):
            t += rng.exponential(1.0 / qps)
            sent[i] = t
            heapq.heappush(pending, (t + delay, i))
    else:
        for i in range(min(concurrency, num_requests)):
            sent[i] = 0.0
            heapq.heappush(pending, (delay, i))
    next_index = len(sent)
    first: dict[int, float] = {}
    done: list[ReplayedRequest] = []
    now = 0.0
    while len(done) < num_requests:
        while pending and pending[0][0] <= now:
            _, i = heapq.heappop(pending)
            sched.add(SimRequest(str(i), input_len, output_len))
        if not sched.has_work:
            now = pending[0][0]
            continue
        step = sched.schedule()
        now += config.step_seconds([s.work() for s in step])
        for event in sched.complete(step):
            i = int(event.rid)
            first.setdefault(i, now)
            if event.finished:
                done.append(ReplayedRequest(sent[i], first[i] - sent[i], now - sent[i], output_len))
                if concurrency is not None and next_index < num_requests:
                    sent[next_index] = now
                    heapq.heappush(pending, (now + delay, next_index))
                    next_index += 1
    return done


def summarize_replay(done: list[ReplayedRequest]) -> dict:
    ttft = np.array([r.ttft_s for r in done]) * 1e3
    tpot = np.array([r.tpot_s for r in done if r.tpot_s is not None]) * 1e3
    window = max(r.arrival_s + r.e2el_s for r in done) - min(r.arrival_s for r in done)
    return {"ttft_p50_ms": float(np.median(ttft)), "ttft_mean_ms": float(ttft.mean()),
            "tpot_p50_ms": float(np.median(tpot)), "e2el_p50_ms": float(np.median([r.e2el_s * 1e3 for r in done])),
            "output_tok_s": sum(r.output_tokens for r in done) / window}
