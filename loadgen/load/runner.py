"""The runner: one run of a plan, from this process (`LocalRunner`) or from client processes
(`loadgen.load.processes.ProcessRunner`).

Both share what a run is: every record goes through one sink (`Runner.record`, which fires the run's `record` event:
the caller's listeners, then the error limit) the moment its request ends, and one `StopSignal` ends the run, whether
a limit was crossed, the stall watchdog saw the server go silent, or the caller's task was cancelled (Ctrl-C).
In-flight requests are then cancelled, recorded as `cancelled`, and the run returns what was measured.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

from loadgen.client import StreamActivity, Target, make_session, open_connections
from loadgen.load.plans import LoadPlan, Sender, shape_of
from loadgen.load.stop import Activity, ErrorLimit, StallWatch, StopSignal
from loadgen.records import RequestRecord
from loadgen.run_events import RunEvents


@dataclass
class LoadOutcome:
    origin_ns: int
    records: list[RequestRecord]  # empty when the caller asked not to keep them (they are on disk)
    interrupted: bool
    wall_s: float
    stopped_early: str | None = None  # why an error limit or the stall watchdog ended the run
    finished: int = 0
    workers: list[dict] | None = None  # --workers: each client process's CPU and wall seconds
    stalled: bool = False  # the stall watchdog ended it: the server stopped answering


class Runner:
    """The shared part of a run. A subclass says how the load starts before the clock (`_start`, returning the
    clock origin), runs (`_load`), is told to stop (`_halt`) and is torn down (`_close`), and keeps `activity`,
    the in-flight requests the stall watchdog watches."""

    activity: Activity

    stop_grace_s: float | None = None  # after a stop, how long the load gets to return its cancelled requests

    def __init__(self, target: Target, workload, plan: LoadPlan, events: RunEvents, keep_records: bool = False):
        self.target, self.workload, self.plan = target, workload, plan
        self.shape = shape_of(plan)
        self.stop = StopSignal()
        self.limit = ErrorLimit(plan, self.stop)
        self.records: list[RequestRecord] = []
        events.record.add_listener(self.limit.record)  # after the caller's listeners: a record is written first
        if keep_records:
            events.record.add_listener(self.records.append)
        self.record = events.record.fire  # the one record sink: every request's record, in the order they end

    async def run(self) -> LoadOutcome:
        """Run the plan until it is done, an error limit is crossed or the caller's task is cancelled."""
        origin_ns = None
        watch = None
        try:
            origin_ns = await self._start()
            load = asyncio.create_task(self._load(origin_ns))
            self.stop.on_request(lambda: self._halt(load))
            if self.plan.stall_timeout_s:
                watch = asyncio.create_task(StallWatch(self.activity, self.plan.stall_timeout_s, self.stop).run())
            try:
                await asyncio.shield(load)
            except asyncio.CancelledError:
                if not load.done():  # the caller cancelled us (Ctrl-C): stop, and wait for the records
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    self.stop.request()
                    await asyncio.wait({load}, timeout=self.stop_grace_s)
            if load.done() and not load.cancelled() and load.exception() is not None:
                raise load.exception()  # type: ignore[misc]
        finally:
            if watch is not None:
                watch.cancel()
            await self._close()
        self.records.sort(key=lambda r: r.index)
        return LoadOutcome(origin_ns, self.records, self.stop.interrupted, (time.perf_counter_ns() - origin_ns) / 1e9,
                           self.stop.reason, self.limit.done, self._worker_stats(), self.stop.stalled)

    async def _start(self) -> int:
        raise NotImplementedError

    async def _load(self, origin_ns: int) -> None:
        raise NotImplementedError

    def _halt(self, load: asyncio.Task) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    def _worker_stats(self) -> list[dict] | None:
        return None


class LocalRunner(Runner):
    """Every request from this process's event loop, through one session."""

    session = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.activity = StreamActivity()

    async def _start(self) -> int:
        # Before the clock starts: the open loop's offsets and first seconds of prompts, or the closed loop's first prompts.
        self.work = self.shape.prepare(self.workload)
        self.session = make_session(self.shape.connection_limit)
        await self.session.__aenter__()
        await open_connections(self.session, self.target, self.shape.connections())
        # Objects alive now never need scanning again; a full collection mid-run is a multi-ms pause.
        gc.collect()
        gc.freeze()
        return time.perf_counter_ns()

    async def _load(self, origin_ns: int) -> None:
        sender = Sender(self.session, self.target, self.plan, origin_ns, self.record, self.activity)
        try:
            await self.shape.drive(sender, self.work, self.stop)
        except asyncio.CancelledError:
            if not self.stop.requested:
                raise

    def _halt(self, load: asyncio.Task) -> None:
        load.cancel()  # in-flight requests end as `cancelled` records

    async def _close(self) -> None:
        if self.session is not None:
            await self.session.__aexit__(None, None, None)
            gc.unfreeze()


async def run_load(target: Target, workload, plan: LoadPlan, on_record: Callable[[RequestRecord], None],
                   keep_records: bool = True) -> LoadOutcome:
    """Run the plan from this process, handing each record to `on_record`. keep_records=False keeps nothing per
    request in memory (long runs: read the file)."""
    events = RunEvents()
    events.record.add_listener(on_record)
    return await LocalRunner(target, workload, plan, events, keep_records).run()
