"""The live engine: the scheduler in its own thread, stepping on StepPipeline's clocks in real time.

It runs in a thread with a precise sleep (asyncio's timers round to whole milliseconds, which would distort
few-millisecond decode steps) and a virtual clock: each iteration starts when the previous one was due to end,
so wake-up jitter never accumulates into the simulated throughput. Tokens are handed to the event loop, which
streams them (server.py).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import deque

from backends.sim.config import SimConfig
from backends.sim.pipeline import ArrivalLag, FrontEnd, StepPipeline
from backends.sim.roofline import memory_plan
from backends.sim.scheduler import ContinuousBatchScheduler, SimRequest, TokenEvent

# The engine thread re-anchors its virtual clock when it is this far behind the real one.
STALL_S = 0.02


class SimEngine:
    """Owns the scheduler in a dedicated thread; the event loop talks to it through an inbox."""

    def __init__(self, config: SimConfig, loop: asyncio.AbstractEventLoop):
        self.config = config
        self.loop = loop
        plan = memory_plan(config.model, config.gpu, config.tp, config.gpu_memory_utilization)
        self.kv_capacity_tokens = plan.kv_capacity_tokens
        self.scheduler = ContinuousBatchScheduler(
            kv_capacity_tokens=plan.kv_capacity_tokens,
            block_size=config.block_size,
            max_num_seqs=config.max_num_seqs,
            max_batched_tokens=config.max_batched_tokens,
        )
        self._inbox: deque[tuple[str, object]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._queues: dict[str, asyncio.Queue[TokenEvent]] = {}
        self._due: list[tuple[float, int, str, int, int]] = []  # fixed timing: (due, seq, rid, token k, of n)
        self._seq = itertools.count()
        self.frontend = FrontEnd(config.cost.frontend_token_s)
        self._thread = threading.Thread(target=self._run_fixed if config.fixed else self._run, name="sim-engine",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def submit(self, request: SimRequest) -> asyncio.Queue[TokenEvent]:
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self._queues[request.rid] = queue
        self._inbox.append(("add", request))
        self._wake.set()
        return queue

    def abort(self, rid: str) -> None:
        self._queues.pop(rid, None)
        self._inbox.append(("abort", rid))
        self._wake.set()

    def _step_done(self, events: list[TokenEvent], ended: float) -> None:
        """In the event loop: the step's tokens go out once the front end has processed them."""
        shown = self.frontend.deliver(ended, sum(ev.tokens for ev in events))
        delay = shown - time.perf_counter()
        if delay > 0:
            self.loop.call_later(delay, self._deliver, events)
        else:
            self._deliver(events)

    def _deliver(self, events: list[TokenEvent]) -> None:
        for ev in events:
            queue = self._queues.get(ev.rid)
            if queue is not None:
                queue.put_nowait(ev)
                if ev.finished:
                    del self._queues[ev.rid]

    def _run_fixed(self) -> None:
        """Each request on its own clock: token k (1-based) due at arrival + TTFT + (k-1) * ITL."""
        ttft, itl = self.config.fixed_ttft_s or 0.0, self.config.fixed_itl_s or 0.0
        aborted: set[str] = set()
        while not self._stop.is_set():
            while self._inbox:
                op, arg = self._inbox.popleft()
                if op == "add":
                    req: SimRequest = arg  # type: ignore[assignment]
                    # from when the request was received, not when this thread got to it
                    start = req.received_s if req.received_s is not None else time.perf_counter()
                    heapq.heappush(self._due, (start + ttft, next(self._seq), req.rid, 1, req.max_tokens))
                else:
                    aborted.add(arg)  # type: ignore[arg-type]
            if not self._due:
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            remaining = self._due[0][0] - time.perf_counter()
            if remaining > 0:
                self._wake.wait(min(remaining, 0.05)) if remaining > 0.002 else time.sleep(remaining)
                self._wake.clear()
                if self._due[0][0] > time.perf_counter():
                    continue
            events = []
            now = time.perf_counter()
            while self._due and self._due[0][0] <= now:
                due, _, rid, k, n = heapq.heappop(self._due)
                if rid in aborted:
                    continue
                events.append(TokenEvent(rid, 1, k == n, due))
                if k < n:
                    heapq.heappush(self._due, (due + itl, next(self._seq), rid, k + 1, n))
            if events:
                self.loop.call_soon_threadsafe(self._deliver, events)

    def _run(self) -> None:
        """The engine loop on StepPipeline's clocks: schedule and launch the next step, then hand on the one in
        flight once the launch is over and the GPU has finished it. Time is virtual while the engine is busy (each
        wait is measured from when the previous one was due, so wake-up jitter does not accumulate into the
        simulated throughput) and re-anchored to the real clock when the engine idles or falls behind by more
        than a stall (a GC pause)."""
        cfg = self.config
        lag = ArrivalLag(cfg.cost.scheduling_lag_steps)
        pipeline = StepPipeline()
        in_flight: tuple[list[TokenEvent], float] | None = None  # launched step: its tokens, when its GPU work ends
        t = time.perf_counter()
        while not self._stop.is_set():
            lag.boundary(self.scheduler)
            while self._inbox:
                op, arg = self._inbox.popleft()
                if op == "add":
                    lag.arrive(self.scheduler, arg)  # type: ignore[arg-type]
                else:
                    self.scheduler.abort(arg)  # type: ignore[arg-type]
                    lag.drop(arg)  # type: ignore[arg-type]
            if in_flight is None and not self.scheduler.has_work:
                if lag.waiting:
                    continue
                self._wake.wait(0.05)
                self._wake.clear()
                t = time.perf_counter()
                continue
            if time.perf_counter() - t > STALL_S:
                t = time.perf_counter()
            launched_at, launched = t, None
            if self.scheduler.has_work:
                plan = self.scheduler.schedule()
                launched_at, gpu_done = pipeline.launch(t, cfg.step_cost([s.work() for s in plan]))
                # the scheduler's state moves on at once, as vLLM's does with placeholders for tokens in flight
                launched = (self.scheduler.complete(plan), gpu_done)
            t = max(launched_at, in_flight[1]) if in_flight is not None else launched_at
            remaining = t - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)
            if in_flight is not None and in_flight[0]:
                self.loop.call_soon_threadsafe(self._step_done, in_flight[0], t)
            in_flight = launched
