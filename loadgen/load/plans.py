"""Load plans: what a run sends and when. `LoadPlan` holds the settings; `shape_of(plan)` gives the class that
drives them: `OpenLoop` (an arrival process), `TraceReplay` (the workload's own timestamps) or `ClosedLoop`
(a fixed number of users, each sending as soon as its previous request ended).

A shape prepares its work before the clock starts (`prepare`: an open loop's offsets and its first few seconds of
prompts, the rest made just ahead of their send time), deals it out to client processes (`deal`) and sends
it (`drive`) through a `Sender`. The same `drive` runs in one process and in every worker process; where it runs
is the runner's business (loadgen/load/runner.py, loadgen/load/processes.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from loadgen.client import StreamActivity, Target, send_request
from loadgen.load.arrivals import SPARE_S, ArrivalProcess, FedSchedule, Schedule
from loadgen.load.stop import StopSignal
from loadgen.records import RequestRecord
from loadgen.workload.specs import RequestSpec

# Connections opened ahead of an open-loop run (its peak concurrency is not known in advance).
OPEN_LOOP_PREWARM = 32
# A closed loop with a count makes at most this many prompts before the clock (and two per user if more); the
# rest are made as users take them, so memory does not grow with --num-requests.
CLOSED_AHEAD_MAX = 1024

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
    stall_timeout_s: float | None = None  # stop the run when no byte arrived on any in-flight request this long

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
            "stall_timeout_s": self.stall_timeout_s,
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
    activity: StreamActivity = field(default_factory=StreamActivity)  # what the stall watchdog reads

    async def conversation(self, first: RequestSpec, position: int, scheduled_s: float | None) -> None:
        """Send a spec, then each later turn of its conversation as soon as the previous one completed.
        A failed turn ends the conversation: its history would be wrong. Warm-up is the first `warmup` scheduled
        items (requests, or conversations with all their turns)."""
        plan = self.plan
        phase = "warmup" if position < plan.warmup else "measured"
        record = await send_request(self.session, self.target, first, self.origin_ns, phase, scheduled_s,
                                    plan.timeout_s, plan.idle_timeout_s, self.activity)
        spec = first.next_turn
        while record is not None:  # None: stopped before it was sent, so not a record
            self.done(record)
            if spec is None or not record.ok:
                break
            record = await send_request(self.session, self.target, spec, self.origin_ns, phase, None,
                                        plan.timeout_s, plan.idle_timeout_s, self.activity)
            spec = spec.next_turn


@dataclass
class Share:
    """One client process's part of a run."""

    users: int  # closed loop: its users (0 for an open loop)
    connections: int  # keep-alive connections it opens before the clock
    work: list  # the items it starts with: (position, spec, offset) for an open loop, (position, spec) closed
    fed: bool  # later items come from the parent: as its users take them (closed), ahead of their time (open)


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

    def offsets(self, workload) -> Iterable[np.ndarray]:
        rng = np.random.default_rng([self.plan.seed, 3])
        return self.plan.arrival.chunks(rng, n=self.plan.total, duration=self.plan.duration_s)

    def prepare(self, workload) -> Schedule:
        """The offsets, and the prompts of the run's first seconds; later prompts are made in `drive`, each a
        little ahead of its send time (loadgen/load/arrivals.py says how far)."""
        schedule = Schedule(self.offsets(workload), workload.specs())
        schedule.make_ahead(0.0)
        return schedule

    async def deal(self, work: Schedule, workers: int) -> list[Share]:
        """Worker k of n sends request k, k + n, ...: it starts with its part of the first seconds, and the
        parent sends the rest ahead of time (Schedule.push)."""
        first = work.first_window()
        return [Share(0, self.connections(workers), [item for item in first if item[0] % workers == k], True)
                for k in range(workers)]

    async def drive(self, sender: Sender, work: Schedule | FedSchedule, stop: StopSignal,
                    users: int | None = None) -> None:
        tasks: set[asyncio.Task] = set()
        origin_ns = sender.origin_ns

        def clock() -> float:
            return (time.perf_counter_ns() - origin_ns) / 1e9

        async def schedule() -> None:
            while (item := await work.next()) is not None:
                position, spec, offset = item
                while work.make_next(clock(), offset - SPARE_S, clock):  # the idle time before this send,
                    await asyncio.sleep(0)  # one prompt at a time: the streams' chunks are read in between
                # uvloop's timers have millisecond resolution and can fire early: sleep again until truly due.
                while (delay := offset - clock()) > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(sender.conversation(spec, position, offset))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        await finish_all(tasks, schedule())


class TraceReplay(OpenLoop):
    """An open loop at the workload's own timestamps (a trace), scaled by the plan's time scale."""

    def offsets(self, workload) -> Iterable[np.ndarray]:
        """The trace's timestamps (its records' order is its specs' order), those before the duration: the trace
        is in memory already."""
        plan = self.plan
        offsets = workload.arrivals()[: plan.total] * plan.trace_time_scale
        if plan.duration_s is not None:
            offsets = offsets[: int(np.searchsorted(offsets, plan.duration_s, side="left"))]  # sorted by time
        return [offsets]


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

        Prompts are synthesised here, before the clock starts, all of them when the plan has a count of at most
        CLOSED_AHEAD_MAX (more would hold a long run's every prompt in memory), so that
        synthesis (about 1 ms a 512-token prompt with a tokenizer) never sits between a user's requests or
        serialises the first wave (measured on the H100 host: 32 users' first requests went out over 100 ms,
        vLLM's client sent them in 13 ms). With only a duration, two per user are made ahead (the first wave
        and the next) and later ones when a user takes one; a thread cannot make them instead: the tokenizer
        in a thread stalled the event loop for up to 1.3 s (measured)."""
        total = self.plan.total
        source = workload.specs()
        ahead = 2 * self.users if total is None else min(total, max(2 * self.users, CLOSED_AHEAD_MAX))
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
