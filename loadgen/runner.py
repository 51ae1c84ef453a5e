"""The run loop: an open-loop schedule or a closed loop of users, sending RequestSpecs through the client.

Every record goes to `on_record` the moment its request ends. Cancelling the task that runs `run_load`
(Ctrl-C) cancels in-flight requests, which are recorded as `cancelled`, and returns what was measured.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from loadgen.arrivals import ArrivalProcess
from loadgen.client import Target, make_session, open_connections, send_request

# Connections opened ahead of an open-loop run (its peak concurrency is not known in advance).
OPEN_LOOP_PREWARM = 32
from loadgen.records import RequestRecord
from loadgen.workload import Workload


@dataclass(frozen=True)
class LoadPlan:
    arrival: ArrivalProcess | None = None  # open loop when set
    concurrency: int | None = None  # closed loop when set
    num_requests: int | None = None  # measured requests (warm-up comes on top)
    duration_s: float | None = None
    warmup: int = 0
    timeout_s: float | None = None
    seed: int = 0

    @property
    def mode(self) -> str:
        return "open" if self.arrival is not None else "closed"


@dataclass
class LoadOutcome:
    origin_ns: int
    records: list[RequestRecord]
    interrupted: bool
    wall_s: float


def _phase(index: int, warmup: int) -> str:
    return "warmup" if index < warmup else "measured"


async def run_load(
    target: Target,
    workload: Workload,
    plan: LoadPlan,
    on_record: Callable[[RequestRecord], None],
) -> LoadOutcome:
    records: list[RequestRecord] = []

    def done(record: RequestRecord) -> None:
        records.append(record)
        on_record(record)

    limit = 0 if plan.mode == "open" else int(plan.concurrency or 1)
    interrupted = False
    async with make_session(limit) as session:
        await open_connections(session, target, limit or OPEN_LOOP_PREWARM)
        # Objects alive now never need scanning again; a full collection mid-run is a multi-ms pause.
        gc.collect()
        gc.freeze()
        origin_ns = time.perf_counter_ns()
        try:
            if plan.mode == "open":
                await _open_loop(session, target, workload, plan, origin_ns, done)
            else:
                await _closed_loop(session, target, workload, plan, origin_ns, done)
        except asyncio.CancelledError:
            interrupted = True
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
    gc.unfreeze()
    records.sort(key=lambda r: r.index)
    return LoadOutcome(origin_ns, records, interrupted, (time.perf_counter_ns() - origin_ns) / 1e9)


async def _finish_all(tasks: set[asyncio.Task]) -> None:
    """Wait for in-flight requests; if we are cancelled meanwhile, cancel them and wait for their records."""
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _open_loop(session, target, workload, plan, origin_ns, done) -> None:
    rng = np.random.default_rng([plan.seed, 3])
    total = None if plan.num_requests is None else plan.num_requests + plan.warmup
    offsets = plan.arrival.offsets(rng, n=total, duration=plan.duration_s)
    # Prompts are synthesised before the clock starts so that synthesis never delays a send.
    specs = workload.take(len(offsets))
    tasks: set[asyncio.Task] = set()

    async def one(spec, scheduled_s: float) -> None:
        done(await send_request(session, target, spec, origin_ns, _phase(spec.index, plan.warmup),
                                scheduled_s, plan.timeout_s))

    try:
        for spec, offset in zip(specs, offsets.tolist()):
            delay = offset - (time.perf_counter_ns() - origin_ns) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(spec, offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    await _finish_all(tasks)


async def _closed_loop(session, target, workload, plan, origin_ns, done) -> None:
    specs = workload.specs()
    total = None if plan.num_requests is None else plan.num_requests + plan.warmup
    deadline_ns = None if plan.duration_s is None else origin_ns + int(plan.duration_s * 1e9)
    issued = 0

    async def user() -> None:
        nonlocal issued
        while True:
            if total is not None and issued >= total:
                return
            if deadline_ns is not None and time.perf_counter_ns() >= deadline_ns:
                return
            issued += 1
            spec = next(specs)
            done(await send_request(session, target, spec, origin_ns, _phase(spec.index, plan.warmup),
                                    None, plan.timeout_s))

    tasks = {asyncio.create_task(user()) for _ in range(int(plan.concurrency or 1))}
    await _finish_all(tasks)
