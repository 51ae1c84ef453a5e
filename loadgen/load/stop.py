"""The one stop signal of a run: a stop signal (SIGINT, SIGTERM, SIGHUP: loadgen/interrupts.py, through the caller,
which cancels the run), a crossed error limit, or a server that stalled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from loadgen.records import RequestRecord


class StopSignal:
    """Says whether, and why, a run is ending before its plan does. Requesting it calls the handlers once (the
    runner's: cancel the load, or tell the workers); a later request keeps the first reason."""

    def __init__(self) -> None:
        self.requested = False
        self.reason: str | None = None  # an error limit's or a stall's reason; None for an interruption
        self.stalled = False  # the stall watchdog stopped it: the server is not answering, so a sweep ends too
        self._handlers: list[Callable[[], None]] = []

    def on_request(self, handler: Callable[[], None]) -> None:
        self._handlers.append(handler)

    def request(self, reason: str | None = None, stalled: bool = False) -> None:
        if self.requested:
            return
        self.requested, self.reason, self.stalled = True, reason, stalled
        for handler in self._handlers:
            handler()

    @property
    def interrupted(self) -> bool:
        return self.requested and self.reason is None


class ErrorLimit:
    """A listener on a run's records: counts failures and requests the stop when a run-level limit is crossed."""

    def __init__(self, plan, stop: StopSignal) -> None:  # a LoadPlan
        self.plan, self.stop = plan, stop
        self.done = 0
        self.failed = 0

    def record(self, record: RequestRecord) -> None:
        reason = self.crossed(record)
        if reason:
            self.stop.request(reason)

    def crossed(self, record: RequestRecord) -> str | None:
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


class Activity(Protocol):
    """Requests in flight and the silence on them: a process's own (loadgen.client.StreamActivity) or its
    client workers' together (loadgen.load.processes.WorkersActivity)."""

    @property
    def in_flight(self) -> int: ...

    def quiet_since_ns(self) -> int: ...


class StallWatch:
    """Requests the stop when requests are in flight and no byte arrived on any of them for `timeout_s`: the
    server stalled (seen on an H200: LightLLM's inference process died of CUDA OOM while its HTTP front kept 319
    streams open, silent, and the run waited for the 600 s per-request timeout).

    The condition is run-wide, never per request: on an overloaded but healthy server a request waiting for its
    first token is quiet while others stream, so overload never trips it. What it must tolerate is a run whose
    every request is waiting for a first token, e.g. one closed-loop user behind a long prefill: the default
    (60 s, --stall-timeout) is far above any prefill. It sleeps until the earliest moment the condition can hold,
    so it costs one timer per quiet spell, nothing per chunk."""

    def __init__(self, activity: Activity, timeout_s: float, stop: StopSignal) -> None:
        self.activity, self.timeout_s, self.stop = activity, timeout_s, stop

    async def run(self) -> None:
        timeout_ns = int(self.timeout_s * 1e9)
        while not self.stop.requested:
            in_flight = self.activity.in_flight
            if in_flight <= 0:
                await asyncio.sleep(self.timeout_s)  # the earliest a stall can be seen is timeout_s after the next send
                continue
            wait_ns = self.activity.quiet_since_ns() + timeout_ns - time.perf_counter_ns()
            if wait_ns <= 0:
                self.stop.request(stall_reason(in_flight, self.timeout_s), stalled=True)
                return
            await asyncio.sleep(wait_ns / 1e9)


def stall_reason(in_flight: int, timeout_s: float) -> str:
    requests = "the 1 request" if in_flight == 1 else f"any of {in_flight} requests"
    return f"the server stalled: no byte on {requests} in flight for {timeout_s:g} s"
