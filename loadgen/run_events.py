"""A run's events, and the listeners that subscribe to them (the pattern of Locust's event hooks).

The run fires four events; the record file, progress bar, error limit, server-metrics scraper, GPU sampler, sim
ground truth and CSV files each subscribe to those they need (loadgen/listeners/), so the code that runs a point
(loadgen/point.py) calls none of them by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.records import RequestRecord


class EventHook:
    """Handlers called in the order they subscribed: a listener that adds to the summary subscribes before one
    that writes it out."""

    def __init__(self) -> None:
        self.handlers: list[Callable[..., Any]] = []

    def add_listener(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        self.handlers.append(handler)
        return handler

    def fire(self, *args: Any) -> None:
        """On the load path (one call per record): plain calls, nothing awaited."""
        for handler in self.handlers:
            handler(*args)

    async def fire_and_wait(self, *args: Any) -> None:
        """Around the load: a handler may be a coroutine function (starting or stopping a scraper process)."""
        for handler in self.handlers:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result


@dataclass
class RunResult:
    """What `finished` listeners get: the records and summary as read back from disk, and how the load ended."""

    run_dir: Path
    records: list[RequestRecord]
    summary: dict  # listeners add their sections to it; it is written to summary.json after them
    outcome: Any  # loadgen.load.LoadOutcome


class RunEvents:
    """The events of one run. A listener is any object with some of the methods `started()`, `record(record)`,
    `stopped(outcome)`, `finished(result)`; `subscribe` adds each one it has to its hook."""

    def __init__(self) -> None:
        self.started = EventHook()  # before the first request (after run.json says "running")
        self.record = EventHook()  # (RequestRecord) each request's record, the moment it ended
        self.stopped = EventHook()  # (LoadOutcome | None) the load ended; None when it failed. Close files here.
        self.finished = EventHook()  # (RunResult) the summary was computed from requests.jsonl

    def subscribe(self, listener: object) -> None:
        for name in ("started", "record", "stopped", "finished"):
            handler = getattr(listener, name, None)
            if handler is not None:
                getattr(self, name).add_listener(handler)
