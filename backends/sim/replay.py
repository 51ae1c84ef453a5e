"""The simulated engine replayed in virtual time: the same scheduler and step costs as the live sim, without HTTP
or sleeping, so a load point of thousands of requests is predicted in a fraction of a second. Used to fit and
check the sim against a measured engine (benchmarks/sim_validation.py) and to search configurations.

Two implementations of one semantics. `replay_stepwise` is the reference: one loop iteration per engine step,
through the live sim's own ContinuousBatchScheduler, StepPipeline, FrontEnd and ArrivalLag, every running
sequence touched every step. `replay` gives the same numbers (a test compares them per request on a grid of
points) without that per-sequence work: a decoding sequence's context grows by one token a step, so the batch is
kept as totals (how many decode, the sum of their contexts, how many cross a KV-block boundary at each phase, who
finishes at which step), a step's cost is computed from those totals with the same floating-point operations as
`SimConfig.step_cost`, and a span of identical decode-only steps between events (an arrival at the engine, a
finish, a prefill chunk, a preemption) runs in a tight loop of scalar arithmetic. A step where the totals do not
suffice (a preemption, a batch larger than the token budget) is done sequence by sequence, as the scheduler does.
"""

from __future__ import annotations

import heapq

import numpy as np

from backends.sim.config import SimConfig
from backends.sim.pipeline import ArrivalLag, FrontEnd, StepPipeline
from backends.sim.replay_common import ReplayedRequest, _NotExact, _workload
from backends.sim.roofline import memory_plan
from backends.sim.scheduler import ContinuousBatchScheduler, SimRequest, TokenEvent
from backends.sim.span_replay import _SpanReplay
from backends.sim.step_totals import _TotalsCost

__all__ = ["ReplayedRequest", "replay", "replay_stepwise", "summarize_replay"]


def replay(config: SimConfig, input_len: int, output_len: int, num_requests: int, qps: float | None = None,
           concurrency: int | None = None, seed: int = 0,
           send_times: list[float] | None = None,
           lengths: list[tuple[int, int]] | None = None) -> list[ReplayedRequest]:
    """Poisson arrivals at `qps`, requests sent at `send_times` (a measured run's own schedule, so that the
    prediction meets the same arrivals as the measurement), or a closed loop of `concurrency` users that all start
    at once. Every request is `input_len` in / `output_len` out unless `lengths` gives (input, output) per request,
    in send order (a workload drawn from a distribution; request k takes lengths[k % len(lengths)]).

    The engine is the live sim's (see replay_stepwise for its clocks), advanced over spans of identical decode
    steps from the batch's totals; the result is replay_stepwise's, request for request."""
    args = (config, input_len, output_len, num_requests, qps, concurrency, seed, send_times, lengths)
    work = _workload(*args)
    totals = _TotalsCost.of(config)
    if totals is not None:
        try:
            return _SpanReplay(config, totals, work, concurrency).run()
        except _NotExact:
            pass
    return replay_stepwise(config, input_len, output_len, num_requests, qps, concurrency, seed, send_times, lengths)


def replay_stepwise(config: SimConfig, input_len: int, output_len: int, num_requests: int,
                    qps: float | None = None, concurrency: int | None = None, seed: int = 0,
                    send_times: list[float] | None = None,
                    lengths: list[tuple[int, int]] | None = None) -> list[ReplayedRequest]:
    """replay's reference: the same arguments and results, one loop iteration per engine step through the live
    sim's own scheduler, every running sequence touched every step (about 2 ms a request; kept to check replay).

    As in the live sim: a request passes the front end and reaches the engine `request_overhead_s` later; the
    engine steps on StepPipeline's clocks (the next step is scheduled and launched while the GPU runs the one
    before; a step's tokens leave once the next is launched and its GPU work is done); a request is scheduled at
    the first step boundary after it arrived (`scheduling_lag_steps` later on a busy engine)."""
    work = _workload(config, input_len, output_len, num_requests, qps, concurrency, seed, send_times, lengths)
    num_requests, arrivals, sent, length_of = work.num_requests, work.arrivals, work.sent, work.length_of
    cost = config.cost
    plan = memory_plan(config.model, config.gpu, config.tp, config.gpu_memory_utilization)
    sched = ContinuousBatchScheduler(plan.kv_capacity_tokens, config.block_size, config.max_num_seqs,
                                     config.max_batched_tokens)
    frontend = FrontEnd(cost.frontend_token_s)
    at_engine: list[tuple[float, int]] = []  # (time it reaches the engine, index)
    lag = ArrivalLag(cost.scheduling_lag_steps)
    pipeline = StepPipeline()
    next_index = len(sent)
    first: dict[int, float] = {}
    scheduled_at: dict[int, float] = {}
    done: list[ReplayedRequest] = []
    in_flight: tuple[list[TokenEvent], float] | None = None  # launched step: its tokens, when its GPU work ends
    now = 0.0  # the engine's CPU clock: the next step boundary

    def intake(until: float) -> None:
        while arrivals and arrivals[0][0] <= until:
            t, i = heapq.heappop(arrivals)
            heapq.heappush(at_engine, (frontend.intake(t) + cost.request_overhead_s, i))

    while len(done) < num_requests:
        intake(now)
        lag.boundary(sched)
        while at_engine and at_engine[0][0] <= now:
            _, i = heapq.heappop(at_engine)
            lag.arrive(sched, SimRequest(str(i), *length_of(i)))
        if in_flight is None and not sched.has_work:
            if lag.waiting:
                continue
            now = max(now, min(x[0][0] for x in (at_engine, arrivals) if x))
            continue
        launched_at, launched = now, None
        if sched.has_work:
            step = sched.schedule()
            for s in step:
                scheduled_at.setdefault(int(s.request.rid), now)
            launched_at, gpu_done = pipeline.launch(now, config.step_cost([s.work() for s in step]))
            launched = (sched.complete(step), gpu_done)
        if in_flight is None:
            now = launched_at
        else:
            now = max(launched_at, in_flight[1])
            intake(now)  # arrivals meanwhile reach the front end before these tokens do
            shown = frontend.deliver(now, sum(e.tokens for e in in_flight[0]))
            for event in in_flight[0]:
                i = int(event.rid)
                first.setdefault(i, shown)
                if event.finished:
                    done.append(ReplayedRequest(sent[i], first[i] - sent[i], shown - sent[i], length_of(i)[1],
                                                scheduled_at[i] - sent[i], length_of(i)[0]))
                    if concurrency is not None and next_index < num_requests:
                        sent[next_index] = shown
                        heapq.heappush(arrivals, (shown, next_index))
                        next_index += 1
        in_flight = launched
    return done


def summarize_replay(done: list[ReplayedRequest]) -> dict:
    """Percentiles as loadgen's metrics take them (numpy's linear interpolation) and throughput over the window
    from the first send to the last finish, so a replay and a measured summary compare key for key."""
    ttft = np.array([r.ttft_s for r in done]) * 1e3
    tpot = np.array([r.tpot_s for r in done if r.tpot_s is not None]) * 1e3
    e2el = np.array([r.e2el_s for r in done]) * 1e3
    start = min(r.arrival_s for r in done)
    window = max(r.arrival_s + r.e2el_s for r in done) - start
    return {"ttft_p50_ms": float(np.median(ttft)), "ttft_p90_ms": float(np.percentile(ttft, 90)),
            "ttft_mean_ms": float(ttft.mean()),
            "before_inference_mean_ms": float(np.mean([r.before_inference_s for r in done]) * 1e3),
            "tpot_p50_ms": float(np.median(tpot)), "tpot_p90_ms": float(np.percentile(tpot, 90)),
            "e2el_p50_ms": float(np.median(e2el)),
            "output_tok_s": sum(r.output_tokens for r in done) / window,
            "requests_per_s": len(done) / window}
