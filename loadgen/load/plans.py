"""Load plans: what a run sends and when. `LoadPlan` holds the settings; `shape_of(plan)` gives the class that
drives them: `OpenLoop` (an arrival process), `TraceReplay` (the workload's own timestamps) or `ClosedLoop`
(a fixed number of users, each sending as soon as its previous request ended).

A shape makes its work before the clock starts (`prepare`), deals it out to client processes (`deal`) and sends
it (`drive`) through a `Sender`. The same `drive` runs in one process and in every worker process; where it runs
is the runner's business (loadgen/load/runner.py, loadgen/load/processes.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from loadgen.client import Target, send_request
from loadgen.load.arrivals import ArrivalProcess
from loadgen.load.stop import StopSignal
from loadgen.records import RequestRecord
from loadgen.workload.specs import RequestSpec

# Connections opened ahead of an open-loop run (its peak concurrency is not known in advance).
OPEN_LOOP_PREWARM = 32

Feed = Callable[[], Awaitable["tuple[int, RequestSpec] | None"]]  # the closed loop's next (position, spec)


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

    @property
    def total(self) -> int | None:
        """Requests (or conversations) to send, warm-up included; None when only a duration bounds the run."""
        return None if self.num_requests is None else self.num_requests + self.warmup

    def describe(self) -> dict:
        """run.json's "load"."""
        return {
            "mode": self.mode,
            "arrival": "trace" if self.trace_time_scale is not None else (self.arrival.kind if self.arrival else None),
            "qps": self.arrival.rate if self.arrival else None,
            "burstiness": self.arrival.burstiness if self.arrival else None,
            "time_scale": self.trace_time_scale,
            "concurrency": self.concurrency,
            "num_requests": self.num_requests,
            "duration_s": self.duration_s,
            "warmup": self.warmup,
            "timeout_s": self.timeout_s,
            "idle_timeout_s": self.idle_timeout_s,
            "max_errors": self.max_errors,
            "max_error_rate": self.max_error_rate,
            "seed": self.seed,
        }


@dataclass
class Sender:
    """Sends conversations through one session, on the run's clock, handing each record to `done` as it ends."""

    session: object  # aiohttp.ClientSession
    target: Target
    plan: LoadPlan
    origin_ns: int
    done: Callable[[RequestRecord], None]

    async def conversation(self, first: RequestSpec, position: int, scheduled_s: float | None) -> None:
        """Send a spec, then each later turn of its conversation as soon as the previous one completed.
        A failed turn ends the conversation: its history would be wrong. Warm-up is the first `warmup` scheduled
        items (requests, or conversations with all their turns)."""
        plan = self.plan
        phase = "warmup" if position < plan.warmup else "measured"
        record = await send_request(self.session, self.target, first, self.origin_ns, phase, scheduled_s,
                                    plan.timeout_s, plan.idle_timeout_s)
        self.done(record)
        spec = first.next_turn
        while spec is not None and record.ok:
            record = await send_request(self.session, self.target, spec, self.origin_ns, phase, None,
                                        plan.timeout_s, plan.idle_timeout_s)
            self.done(record)
            spec = spec.next_turn


@dataclass
class Schedule:
    """An open loop's work: each spec, its place in the whole schedule (for its phase) and its send offset."""

    positions: list[int]
    specs: list[RequestSpec]
    offsets: list[float]

    def share(self, k: int, n: int) -> Schedule:
        """Worker k of n sends request k, k + n, ...: the same requests at the same offsets whatever n is."""
        return Schedule(self.positions[k::n], self.specs[k::n], self.offsets[k::n])


@dataclass
class Share:
    """One client process's part of a run."""

    users: int  # closed loop: its users (0 for an open loop)
    connections: int  # keep-alive connections it opens before the clock
    work: Schedule | list[tuple[int, RequestSpec]]  # its slice of the schedule, or the items it starts with
    fed: bool  # closed loop: later items come from the parent as its users take them


async def finish_all(tasks: set[asyncio.Task], scheduling: Awaitable[None] | None = None) -> None:
    """Wait for `scheduling` (what adds to `tasks`), then for in-flight requests; if we are cancelled meanwhile,
    cancel them and wait for their records (a stop: each ends as a `cancelled` record)."""
    try:
        if scheduling is not None:
            await scheduling
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class OpenLoop:
    """Requests at offsets drawn from the plan's arrival process, each sent on time whatever the server does."""

    def __init__(self, plan: LoadPlan):
        self.plan = plan

    connection_limit = 0  # the client must never queue

    def connections(self, workers: int = 1) -> int:
        return max(1, OPEN_LOOP_PREWARM // workers)

    def offsets(self, workload) -> tuple[list[RequestSpec], np.ndarray]:
        rng = np.random.default_rng([self.plan.seed, 3])
        offsets = self.plan.arrival.offsets(rng, n=self.plan.total, duration=self.plan.duration_s)
        return workload.take(len(offsets)), offsets

    def prepare(self, workload) -> Schedule:
        """Prompts are made here, before the clock starts, so that synthesis never delays a send."""
        specs, offsets = self.offsets(workload)
        return Schedule(list(range(len(specs))), specs, offsets.tolist())

    async def deal(self, work: Schedule, workers: int) -> list[Share]:
        return [Share(0, self.connections(workers), work.share(k, workers), False) for k in range(workers)]

    async def drive(self, sender: Sender, work: Schedule, stop: StopSignal, users: int | None = None) -> None:
        tasks: set[asyncio.Task] = set()
        origin_ns = sender.origin_ns

        async def schedule() -> None:
            for position, spec, offset in zip(work.positions, work.specs, work.offsets):
                # uvloop's timers have millisecond resolution and can fire early: sleep again until truly due.
                while (delay := offset - (time.perf_counter_ns() - origin_ns) / 1e9) > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(sender.conversation(spec, position, offset))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        await finish_all(tasks, schedule())


class TraceReplay(OpenLoop):
    """An open loop at the workload's own timestamps (a trace), scaled by the plan's time scale."""

    def offsets(self, workload) -> tuple[list[RequestSpec], np.ndarray]:
        plan = self.plan
        specs = workload.take(plan.total) if plan.total is not None else list(workload.specs())
        offsets = np.array([(s.arrival_s or 0.0) * plan.trace_time_scale for s in specs])
        if plan.duration_s is not None:
            keep = offsets < plan.duration_s
            specs, offsets = [s for s, k in zip(specs, keep) if k], offsets[keep]
        return specs, offsets


class ClosedLoop:
    """`concurrency` users, each sending its next item as soon as its previous request ended."""

    def __init__(self, plan: LoadPlan):
        self.plan = plan
        self.users = int(plan.concurrency or 1)
        self.connection_limit = self.users

    def connections(self, workers: int = 1) -> int:
        return self.users

    def prepare(self, workload) -> Feed:
        """The source of work: (position, spec) in workload order, None once the plan's count is issued or a
        finite workload (a trace) ran out.

        Prompts are synthesised here, before the clock starts, all of them when the plan has a count, so that
        synthesis (about 1 ms a 512-token prompt with a tokenizer) never sits between a user's requests or
        serialises the first wave (measured on the H100 host: 32 users' first requests went out over 100 ms,
        vLLM's client sent them in 13 ms). With only a duration, two per user are made ahead (the first wave
        and the next) and later ones when a user takes one; a thread cannot make them instead: the tokenizer
        in a thread stalled the event loop for up to 1.3 s (measured)."""
        total = self.plan.total
        source = workload.specs()
        ready = deque(itertools.islice(source, total if total is not None else 2 * self.users))
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

    async def deal(self, work: Feed, workers: int) -> list[Share]:
        """Users split evenly (never more workers than users). Each worker starts with two items per user,
        dealt round-robin so that the warm-up (the first positions) is spread over all workers; later items
        go to whoever asks."""
        users = [n for n in split_evenly(self.users, workers) if n]
        buffers: list[list] = [[] for _ in users]
        for turn in range(2 * max(users)):
            for k, n in enumerate(users):
                if turn < 2 * n and (item := await work()) is not None:
                    buffers[k].append(item)
        return [Share(n, n, buffer, True) for n, buffer in zip(users, buffers)]

    async def drive(self, sender: Sender, work: Feed, stop: StopSignal, users: int | None = None) -> None:
        plan = self.plan
        deadline_ns = None if plan.duration_s is None else sender.origin_ns + int(plan.duration_s * 1e9)

        async def user() -> None:
            # A cancelled request is recorded, not raised (send_request keeps its record), so a user sees a stop
            # only here: without this check it would take its next request and the run would never stop.
            while not stop.requested:
                if deadline_ns is not None and time.perf_counter_ns() >= deadline_ns:
                    return
                item = await work()
                if item is None:
                    return
                await sender.conversation(item[1], item[0], None)

        tasks = {asyncio.create_task(user()) for _ in range(self.users if users is None else users)}
        await finish_all(tasks)


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` users over `parts` workers, the first ones taking one more when it does not divide."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def shape_of(plan: LoadPlan) -> OpenLoop | ClosedLoop:
    if plan.trace_time_scale is not None:
        return TraceReplay(plan)
    return OpenLoop(plan) if plan.arrival is not None else ClosedLoop(plan)
