"""The one stop signal of a run: a stop signal (SIGINT, SIGTERM, SIGHUP: loadgen/interrupts.py, through the caller,
which cancels the run) or a crossed error limit."""

from __future__ import annotations

from collections.abc import Callable

from loadgen.records import RequestRecord


class StopSignal:
    """Says whether, and why, a run is ending before its plan does. Requesting it calls the handlers once (the
    runner's: cancel the load, or tell the workers); a later request keeps the first reason."""

    def __init__(self) -> None:
        self.requested = False
        self.reason: str | None = None  # an error limit's reason; None for an interruption
        self._handlers: list[Callable[[], None]] = []

    def on_request(self, handler: Callable[[], None]) -> None:
        self._handlers.append(handler)

    def request(self, reason: str | None = None) -> None:
        if self.requested:
            return
        self.requested, self.reason = True, reason
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
