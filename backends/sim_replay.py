"""The simulated engine replayed in virtual time: the same scheduler and step costs as the live sim, without HTTP
or sleeping, so a load point of thousands of requests is predicted in a fraction of a second. Used to fit and
check the sim against a measured engine (benchmarks/sim_validation.py).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from backends.sim import ArrivalLag, FrontEnd, SimConfig
from backends.sim_scheduler import ContinuousBatchScheduler, SimRequest
from backends.roofline import memory_plan


@dataclass(frozen=True)
class ReplayedRequest:
    arrival_s: float
    ttft_s: float
    e2el_s: float
    output_tokens: int
    before_inference_s: float = 0.0  # sent until first scheduled (vLLM's e2e - inference, plus the client's hop)

    @property
    def tpot_s(self) -> float | None:
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else None


def replay(config: SimConfig, input_len: int, output_len: int, num_requests: int, qps: float | None = None,
           concurrency: int | None = None, seed: int = 0,
           send_times: list[float] | None = None) -> list[ReplayedRequest]:
    """Poisson arrivals at `qps`, requests sent at `send_times` (a measured run's own schedule, so that the
    prediction meets the same arrivals as the measurement), or a closed loop of `concurrency` users; fixed lengths.

    As in the live sim: a request passes the front end (FIFO, behind the tokens it is still streaming) and
    reaches the engine `request_overhead_s` later; a busy engine schedules it `scheduling_lag_steps` step
    boundaries later; a step's tokens reach the client once the front end has processed them."""
    if sum(x is not None for x in (qps, concurrency, send_times)) != 1:
        raise ValueError("give one of qps, concurrency, send_times")
    cost = config.cost
    plan = memory_plan(config.model, config.gpu, config.tp, config.gpu_memory_utilization)
    sched = ContinuousBatchScheduler(plan.kv_capacity_tokens, config.block_size, config.max_num_seqs,
                                     config.max_batched_tokens)
    rng = np.random.default_rng(seed)
    arrivals: list[tuple[float, int]] = []  # (sent, index)
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
    frontend = FrontEnd(cost.frontend_token_s)
    at_engine: list[tuple[float, int]] = []  # (time it reaches the engine, index)
    lag = ArrivalLag(cost.scheduling_lag_steps)
    next_index = len(sent)
    first: dict[int, float] = {}
    scheduled_at: dict[int, float] = {}
    done: list[ReplayedRequest] = []
    now = 0.0

    def intake(until: float) -> None:
        while arrivals and arrivals[0][0] <= until:
            t, i = heapq.heappop(arrivals)
            heapq.heappush(at_engine, (frontend.intake(t) + cost.request_overhead_s, i))

    while len(done) < num_requests:
        intake(now)
        lag.boundary(sched)
        while at_engine and at_engine[0][0] <= now:
            _, i = heapq.heappop(at_engine)
            lag.arrive(sched, SimRequest(str(i), input_len, output_len))
        if not sched.has_work:
            if lag.waiting:
                continue
            now = max(now, min(x[0][0] for x in (at_engine, arrivals) if x))
            continue
        step = sched.schedule()
        for s in step:
            scheduled_at.setdefault(int(s.request.rid), now)
        now += config.step_seconds([s.work() for s in step])
        intake(now)  # arrivals during the step reach the front end before the step's tokens do
        events = sched.complete(step)
        shown = frontend.deliver(now, sum(e.tokens for e in events))
        for event in events:
            i = int(event.rid)
            first.setdefault(i, shown)
            if event.finished:
                done.append(ReplayedRequest(sent[i], first[i] - sent[i], shown - sent[i], output_len,
                                            scheduled_at[i] - sent[i]))
                if concurrency is not None and next_index < num_requests:
                    sent[next_index] = shown
                    heapq.heappush(arrivals, (shown, next_index))
                    next_index += 1
    return done


def summarize_replay(done: list[ReplayedRequest]) -> dict:
    ttft = np.array([r.ttft_s for r in done]) * 1e3
    tpot = np.array([r.tpot_s for r in done if r.tpot_s is not None]) * 1e3
    window = max(r.arrival_s + r.e2el_s for r in done) - min(r.arrival_s for r in done)
    return {"ttft_p50_ms": float(np.median(ttft)), "ttft_mean_ms": float(ttft.mean()),
            "before_inference_mean_ms": float(np.mean([r.before_inference_s for r in done]) * 1e3),
            "tpot_p50_ms": float(np.median(tpot)), "e2el_p50_ms": float(np.median([r.e2el_s * 1e3 for r in done])),
            "output_tok_s": sum(r.output_tokens for r in done) / window}
