"""The run loop: an open-loop schedule or a closed loop of users, sending RequestSpecs through the client.

Every record goes to `on_record` the moment its request ends. Cancelling the task that runs `run_load`
(Ctrl-C) cancels in-flight requests, which are recorded as `cancelled`, and returns what was measured.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable

import numpy as np

from loadgen.arrivals import ArrivalProcess
from loadgen.client import Target, make_session, open_connections, send_request

# Connections opened ahead of an open-loop run (its peak concurrency is not known in advance).
OPEN_LOOP_PREWARM = 32
from loadgen.records import RequestRecord
from loadgen.workload import RequestSpec


@dataclass(frozen=True)
class LoadPlan:
    arrival: ArrivalProcess | None = None  # open loop when set
    concurrency: int | None = None  # closed loop when set
    num_requests: int | None = None  # measured requests (warm-up comes on top)
    duration_s: float | None = None
    warmup: int = 0
    timeout_s: float | None = None
    seed: int = 0
    trace_time_scale: float | None = None  # open loop at the workload's own timestamps (trace replay)
    idle_timeout_s: float | None = None  # longest silence between chunks
    max_errors: int | None = None  # stop the run after this many failed requests (errors and timeouts)
    max_error_rate: float | None = None  # ... or when this fraction of finished requests failed
    error_rate_min_requests: int = 20  # the rate rule waits for this many finished requests

    @property
    def mode(self) -> str:
        return "open" if self.arrival is not None or self.trace_time_scale is not None else "closed"


@dataclass
class LoadOutcome:
    origin_ns: int
    records: list[RequestRecord]  # empty when the caller asked not to keep them (they are on disk)
    interrupted: bool
    wall_s: float
    stopped_early: str | None = None  # why an error limit ended the run
    finished: int = 0
    workers: list[dict] | None = None  # --workers: each client process's CPU and wall seconds


class ErrorLimit:
    """Counts failures as records arrive and says when a run-level limit is crossed."""

    def __init__(self, plan: "LoadPlan"):
        self.plan = plan
        self.done = 0
        self.failed = 0

    def add(self, record: RequestRecord) -> str | None:
        self.done += 1
        if record.status.startswith("error") or record.status == "timeout":
            self.failed += 1
        p = self.plan
        if p.max_errors is not None and self.failed > p.max_errors:
            return f"{self.failed} failed requests exceed --max-errors {p.max_errors}"
        if (p.max_error_rate is not None and self.done >= p.error_rate_min_requests
                and self.failed / self.done > p.max_error_rate):
            return (f"{self.failed} of {self.done} requests failed ({self.failed / self.done:.0%}), "
                    f"above --max-error-rate {p.max_error_rate:g}")
        return None


def _phase(position: int, warmup: int) -> str:
    """Warm-up is the first `warmup` scheduled items (requests, or conversations with all their turns)."""
    return "warmup" if position < warmup else "measured"


async def _send_conversation(session, target, first: RequestSpec, origin_ns: int, phase: str,
                             scheduled_s: float | None, plan: "LoadPlan", done) -> None:
    """Send a spec, then each later turn of its conversation as soon as the previous one completed.
    A failed turn ends the conversation: its history would be wrong."""
    record = await send_request(session, target, first, origin_ns, phase, scheduled_s, plan.timeout_s,
                                plan.idle_timeout_s)
    done(record)
    spec = first.next_turn
    while spec is not None and record.ok:
        record = await send_request(session, target, spec, origin_ns, phase, None, plan.timeout_s,
                                    plan.idle_timeout_s)
        done(record)
        spec = spec.next_turn


async def run_load(
    target: Target,
    workload,  # Workload or DatasetWorkload
    plan: LoadPlan,
    on_record: Callable[[RequestRecord], None],
    keep_records: bool = True,
) -> LoadOutcome:
    """Run the plan. keep_records=False keeps nothing per request in memory (long runs: read the file)."""
    records: list[RequestRecord] = []
    limit_check = ErrorLimit(plan)
    stopped_early: str | None = None
    main = asyncio.current_task()

    def done(record: RequestRecord) -> None:
        nonlocal stopped_early
        if keep_records:
            records.append(record)
        on_record(record)
        reason = limit_check.add(record)
        if reason and stopped_early is None:
            stopped_early = reason
            if main is not None:
                main.cancel()

    limit = 0 if plan.mode == "open" else int(plan.concurrency or 1)
    interrupted = False
    # Before the clock starts: the open loop's schedule, or the closed loop's prompts.
    planned = schedule(workload, plan) if plan.mode == "open" else None
    next_item = numbered_specs(workload, plan) if plan.mode != "open" else None
    async with make_session(limit) as session:
        await open_connections(session, target, limit or OPEN_LOOP_PREWARM)
        # Objects alive now never need scanning again; a full collection mid-run is a multi-ms pause.
        gc.collect()
        gc.freeze()
        origin_ns = time.perf_counter_ns()
        try:
            if plan.mode == "open":
                await _open_loop(session, target, planned, plan, origin_ns, done)
            else:
                await _closed_loop(session, target, next_item, plan, origin_ns, done)
        except asyncio.CancelledError:
            interrupted = stopped_early is None
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
    gc.unfreeze()
    records.sort(key=lambda r: r.index)
    return LoadOutcome(origin_ns, records, interrupted, (time.perf_counter_ns() - origin_ns) / 1e9,
                       stopped_early, limit_check.done)


async def _finish_all(tasks: set[asyncio.Task]) -> None:
    """Wait for in-flight requests; if we are cancelled meanwhile, cancel them and wait for their records."""
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _open_loop(session, target, planned, plan, origin_ns, done, positions=None) -> None:
    """positions: each spec's place in the whole schedule (a worker sends only its share), for the phase."""
    specs, offsets = planned
    tasks: set[asyncio.Task] = set()
    positions = range(len(specs)) if positions is None else positions

    try:
        for position, spec, offset in zip(positions, specs, offsets.tolist()):
            # uvloop's timers have millisecond resolution and can fire early: sleep again until truly due.
            while (delay := offset - (time.perf_counter_ns() - origin_ns) / 1e9) > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(_send_conversation(session, target, spec, origin_ns,
                                                          _phase(position, plan.warmup), offset, plan, done))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    await _finish_all(tasks)


def schedule(workload, plan: LoadPlan) -> tuple[list[RequestSpec], np.ndarray]:
    """Specs and their send offsets for an open loop. Prompts are made here, before the clock starts,
    so that synthesis never delays a send."""
    total = None if plan.num_requests is None else plan.num_requests + plan.warmup
    if plan.trace_time_scale is not None:
        specs = workload.take(total) if total is not None else list(workload.specs())
        offsets = np.array([(s.arrival_s or 0.0) * plan.trace_time_scale for s in specs])
        if plan.duration_s is not None:
            keep = offsets < plan.duration_s
            specs, offsets = [s for s, k in zip(specs, keep) if k], offsets[keep]
        return specs, offsets
    rng = np.random.default_rng([plan.seed, 3])
    offsets = plan.arrival.offsets(rng, n=total, duration=plan.duration_s)
    return workload.take(len(offsets)), offsets


def numbered_specs(workload, plan: LoadPlan) -> Callable[[], Awaitable[tuple[int, RequestSpec] | None]]:
    """The closed loop's source of work: (position, spec) in workload order, None once the plan's count is
    issued or a finite workload (a trace) ran out.

    Call it before the clock starts: prompts are synthesised here, all of them when the plan has a count, so
    that synthesis (about 1 ms a 512-token prompt with a tokenizer) never sits between a user's requests or
    serialises the first wave (measured on the H100 host: 32 users' first requests went out over 100 ms,
    vLLM's client sent them in 13 ms). With only a duration, two per user are made ahead (the first wave and
    the next) and later ones when a user takes one; a thread cannot make them instead: the tokenizer in a
    thread stalled the event loop for up to 1.3 s (measured)."""
    total = None if plan.num_requests is None else plan.num_requests + plan.warmup
    source = workload.specs()
    ahead = total if total is not None else 2 * int(plan.concurrency or 1)
    ready = deque(itertools.islice(source, ahead))
    issued = 0

    async def next_item() -> tuple[int, RequestSpec] | None:
        nonlocal issued
        if total is not None and issued >= total:
            return None
        spec = ready.popleft() if ready else next(source, None)
        if spec is None:
            return None
        issued += 1
        return issued - 1, spec

    return next_item


async def _closed_loop(session, target, next_item, plan, origin_ns, done, concurrency: int | None = None) -> None:
    """`concurrency` users, each sending its next item as soon as its previous request ended."""
    deadline_ns = None if plan.duration_s is None else origin_ns + int(plan.duration_s * 1e9)

    async def user() -> None:
        task = asyncio.current_task()
        while True:
            if deadline_ns is not None and time.perf_counter_ns() >= deadline_ns:
                return
            item = await next_item()
            if item is None:
                return
            position, spec = item
            await _send_conversation(session, target, spec, origin_ns, _phase(position, plan.warmup), None,
                                     plan, done)
            # A cancelled request is recorded, not raised (send_request keeps its record): the cancel is still
            # pending on this task, and it means the run is stopping, so take no next request.
            if task.cancelling():
                return

    users = int(plan.concurrency or 1) if concurrency is None else concurrency
    tasks = {asyncio.create_task(user()) for _ in range(users)}
    await _finish_all(tasks)
