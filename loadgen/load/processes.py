"""`--workers N`: one run's load split over N client processes, so every core of the load machine sends and reads.

The parent keeps the plan. It deals the open-loop schedule out (request k to worker k mod N), each request's
prompt made and sent a little ahead of its send time, or feeds closed-loop workers their next request as they
take one, so a run sends the same requests at the same offsets whatever N is. All workers share the parent's
clock origin: perf_counter_ns is CLOCK_MONOTONIC, one clock for every process of a host, so records from
different workers are on one time axis. Each record comes
back the moment its request ends and goes through the runner's one sink; the stop signal (Ctrl-C, an error
limit, a stall) stops every worker, whose in-flight requests come back as `cancelled`. The worker's side is
loadgen/load/worker.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from loadgen.client import Target
from loadgen.errors import LoadgenError
from loadgen.load import channel
from loadgen.load.arrivals import Schedule
from loadgen.load.plans import LoadPlan, Share, split_evenly
from loadgen.load.runner import Runner
from loadgen.run_events import RunEvents

__all__ = ["ProcessRunner", "WorkerJob", "WorkersActivity", "activity_period", "choose_workers", "client_summary",
           "on_this_host", "split_evenly"]

READY_TIMEOUT_S = 120.0  # a worker imports aiohttp and opens its connections before the clock starts
STOP_GRACE_S = 30.0  # after a stop, how long workers get to return their cancelled requests

# 'auto' adds a process per this many closed-loop users or open-loop requests/s: where one process's share of
# request starts and chunk reads stays well inside the 1 ms budget (benchmarks/loadgen_capacity.py).
STREAMS_PER_WORKER = 128
RATE_PER_WORKER = 100.0


@dataclass
class WorkerJob:
    index: int
    target: Target  # without count_tokens (a closure): the worker loads `tokenizer` itself
    tokenizer: str | None
    plan: LoadPlan
    share: Share


def choose_workers(requested: int | str, plan: LoadPlan, cores: int, target_on_this_host: bool) -> int:
    """The number of client processes: as asked, or for 'auto' one per STREAMS_PER_WORKER closed-loop users or
    RATE_PER_WORKER requests/s of the plan, at most one per core.

    'auto' stays at one process when the server runs on this host (the embedded sim, a local engine): it needs
    the cores too, and on a 2-core machine a second client process made the measured TTFT error worse."""
    if requested != "auto":
        return int(requested)
    if target_on_this_host or cores < 2 or plan.trace_time_scale is not None:
        return 1
    if plan.mode == "closed":
        need = -(-int(plan.concurrency or 1) // STREAMS_PER_WORKER)
    else:
        need = int(-(-plan.arrival.rate // RATE_PER_WORKER)) if plan.arrival is not None else 1
    return max(1, min(cores, need))


def on_this_host(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host == socket.gethostname().lower()


def client_summary(parent: tuple[float, float], workers: list[dict] | None) -> dict:
    """The client's own CPU use: the parent (records, progress) plus each worker. The busiest single process is
    what says whether the client was the bottleneck: each process's event loop runs on one core."""
    cpu, wall = parent
    per_process = [cpu] + [w["cpu_s"] or 0.0 for w in workers or []]
    out = {"cpu_s": sum(per_process), "wall_s": wall, "processes": len(per_process),
           "busiest_process_cpu_s": max(per_process),
           "cpu_fraction_of_one_core": max(per_process) / wall if wall else None}
    if workers:
        out["workers"] = workers
    return out


def activity_period(stall_timeout_s: float) -> float:
    """How often a worker tells the parent about its streams: well inside the stall timeout, so that the parent's
    view is never stale by more than a quarter of it, and at most once a second (one small frame a second)."""
    return min(1.0, stall_timeout_s / 4)


class WorkersActivity:
    """The stall watchdog's view of every worker's streams together, so that the condition is the run's: no byte on
    ANY worker's in-flight requests, as in one process.

    Why not a watchdog in each worker that requests the shared stop (as a crossed error limit does): a worker's
    own streams can all be waiting for a first token on a healthy server that is streaming to another worker's
    requests (few users per worker, a small batch), and that is overload, not a stall. So each worker reports its
    in-flight count and since when it has been quiet (`quiet_since_ns`, on the host's one monotonic clock) every
    `activity_period` while it changes, and the parent's one watchdog reads them merged: in flight is the sum, and
    quiet since is the latest of the workers' (a byte on any worker ends the silence). The parent's view lags by
    at most one period, so it can only fire later than a single process would, never earlier."""

    def __init__(self) -> None:
        self.reports: dict[int, tuple[int, int]] = {}  # worker -> (in flight, quiet since ns)

    def report(self, worker: int, in_flight: int, quiet_since_ns: int) -> None:
        self.reports[worker] = (in_flight, quiet_since_ns)

    @property
    def in_flight(self) -> int:
        return sum(n for n, _ in self.reports.values())

    def quiet_since_ns(self) -> int:
        return max((since for _, since in self.reports.values()), default=0)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    cpu_s: float | None = None
    wall_s: float | None = None
    finished: bool = False

    def send(self, message) -> None:
        if not self.writer.is_closing():
            self.writer.write(channel.frame(message))


async def _start_worker(index: int) -> _Worker:
    parent_sock, child_sock = socket.socketpair()
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        # A process group of its own: a terminal's Ctrl-C or hang-up (SIGHUP to the foreground group) never reaches
        # it; the parent decides and tells it over the socket, whose end is also how it learns the parent died.
        process = subprocess.Popen([sys.executable, "-m", "loadgen.load.worker", str(child_sock.fileno())],
                                   pass_fds=[child_sock.fileno()], env=env, stdin=subprocess.DEVNULL,
                                   process_group=0)
    finally:
        child_sock.close()
    reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
    return _Worker(index, process, reader, writer)


class ProcessRunner(Runner):
    """The run over `workers` client processes. Records are not kept in memory (they are on disk)."""

    stop_grace_s = STOP_GRACE_S

    def __init__(self, target: Target, workload, plan: LoadPlan, events: RunEvents, workers: int,
                 tokenizer: str | None = None):
        super().__init__(target, workload, plan, events, keep_records=False)
        self.workers, self.tokenizer = workers, tokenizer
        self.started: list[_Worker] = []
        self.activity = WorkersActivity()

    async def _start(self) -> int:
        work = self.shape.prepare(self.workload)
        shares = await self.shape.deal(work, self.workers)
        self.feed = work if self.plan.mode == "closed" else None
        self.schedule = work if isinstance(work, Schedule) else None
        bare_target = replace(self.target, count_tokens=None)
        for i in range(len(shares)):
            self.started.append(await _start_worker(i))
        for w, share in zip(self.started, shares):
            w.send(("job", WorkerJob(w.index, bare_target, self.tokenizer, self.plan, share)))
        for w in self.started:
            message = await asyncio.wait_for(channel.read(w.reader), READY_TIMEOUT_S)
            if message != ("ready",):  # it exited before it was ready; its own error is on stderr
                raise LoadgenError(f"client worker {w.index} failed to start (exit code {w.process.poll()})")
        origin_ns = time.perf_counter_ns() + 5_000_000  # every worker has the origin before it arrives
        for w in self.started:
            w.send(("go", origin_ns))
        return origin_ns

    async def _load(self, origin_ns: int) -> None:
        push = None
        if self.schedule is not None:
            def send(k: int, items: list | None) -> None:
                self.started[k].send(("specs", items) if items is not None else ("end",))

            push = asyncio.create_task(self.schedule.push(len(self.started), send, origin_ns,
                                                          lambda: self.stop.requested))
        try:
            await asyncio.gather(*(self._listen(w) for w in self.started), *([push] if push else []))
        finally:
            if push is not None and not push.done():  # a worker failed: stop dealing
                push.cancel()

    async def _listen(self, w: _Worker) -> None:
        fed_all = self.feed is None
        while True:
            message = await channel.read(w.reader)
            if message is None:
                if not w.finished:
                    raise LoadgenError(f"client worker {w.index} exited mid-run (exit code "
                                       f"{w.process.wait()}); the records it returned are kept")
                return
            kind = message[0]
            if kind == "record":
                self.record(message[1])
            elif kind == "want" and not fed_all:
                item = await self.feed()
                if item is None:
                    fed_all = True
                    w.send(("end",))
                else:
                    w.send(("specs", [item]))
            elif kind == "activity":
                self.activity.report(w.index, message[1], message[2])
            elif kind == "done":
                w.cpu_s, w.wall_s, w.finished = message[1], message[2], True
                return

    def _halt(self, load: asyncio.Task) -> None:
        for w in self.started:  # their records keep coming back until each says it is done
            w.send(("stop",))

    async def _close(self) -> None:
        for w in self.started:
            w.writer.close()
            try:
                w.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait()

    def _worker_stats(self) -> list[dict]:
        return [{"worker": w.index, "cpu_s": w.cpu_s, "wall_s": w.wall_s} for w in self.started]
