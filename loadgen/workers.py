"""`--workers N`: one run's load split over N client processes, so every core of the load machine sends and reads.

The parent keeps the plan. It builds the open-loop schedule and deals it out (request k to worker k mod N), or
feeds closed-loop workers their next request as they take one, so a run sends the same requests at the same
offsets whatever N is. All workers share the parent's clock origin: perf_counter_ns is CLOCK_MONOTONIC, one
clock for every process of a host, so records from different workers are on one time axis. Each record comes
back the moment its request ends and the parent writes it then; Ctrl-C and the error limits stop every worker,
whose in-flight requests come back as `cancelled`.

Messages are pickled frames over a socket pair (the worker is a trusted child of this process).
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from loadgen.client import Target, make_session, open_connections
from loadgen.errors import LoadgenError
from loadgen.records import RequestRecord
from loadgen.runner import (
    OPEN_LOOP_PREWARM,
    ErrorLimit,
    LoadOutcome,
    LoadPlan,
    _closed_loop,
    _open_loop,
    numbered_specs,
    schedule,
)

_HEADER = struct.Struct("!I")
READY_TIMEOUT_S = 120.0  # a worker imports aiohttp and opens its connections before the clock starts
STOP_GRACE_S = 30.0  # after a stop, how long workers get to return their cancelled requests


@dataclass
class WorkerJob:
    index: int
    target: Target  # without count_tokens (a closure): the worker loads `tokenizer` itself
    tokenizer: str | None
    plan: LoadPlan
    open_items: tuple[list[int], list, list[float]] | None  # open loop: positions, specs, offsets
    concurrency: int  # closed loop: this worker's users
    prewarm: int
    closed_items: list  # closed loop: (position, spec) to start with; more come as the worker takes them


# 'auto' adds a process per this many closed-loop users or open-loop requests/s: where one process's share of
# request starts and chunk reads stays well inside the 1 ms budget (benchmarks/loadgen_capacity.py).
STREAMS_PER_WORKER = 128
RATE_PER_WORKER = 100.0


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


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` users over `parts` workers, the first ones taking one more when it does not divide."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _frame(message) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _read(reader: asyncio.StreamReader):
    """The next message, or None at end of stream (the other side is gone)."""
    try:
        size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
        return pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


# -- parent ---------------------------------------------------------------------------------------------------
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
            self.writer.write(_frame(message))


async def _start_worker(index: int) -> _Worker:
    parent_sock, child_sock = socket.socketpair()
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        process = subprocess.Popen([sys.executable, "-m", "loadgen.workers", str(child_sock.fileno())],
                                   pass_fds=[child_sock.fileno()], env=env, stdin=subprocess.DEVNULL)
    finally:
        child_sock.close()
    reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
    return _Worker(index, process, reader, writer)


async def run_load_in_workers(target: Target, workload, plan: LoadPlan, on_record: Callable[[RequestRecord], None],
                              workers: int, tokenizer: str | None = None) -> LoadOutcome:
    """Like runner.run_load, over `workers` processes. Records are not kept in memory (they are on disk)."""
    open_loop = plan.mode == "open"
    planned = schedule(workload, plan) if open_loop else None
    users = split_evenly(int(plan.concurrency or 1), workers) if not open_loop else [0] * workers
    if not open_loop:
        workers = sum(1 for u in users if u)  # never more workers than users
        users = users[:workers]
    next_item = None if open_loop else numbered_specs(workload, plan)
    limit_check = ErrorLimit(plan)
    stopped_early: str | None = None
    interrupted = False
    bare_target = replace(target, count_tokens=None)
    started: list[_Worker] = []
    try:
        for i in range(workers):
            started.append(await _start_worker(i))
        # Closed loop: each worker starts with a buffer of two items per user, dealt round-robin so that the
        # warm-up (the first positions) is spread over all workers; later items go to whoever asks.
        buffers: list[list] = [[] for _ in started]
        if next_item is not None:
            for turn in range(2 * max(users)):
                for w in started:
                    if turn < 2 * users[w.index] and (item := await next_item()) is not None:
                        buffers[w.index].append(item)
        for w in started:
            items = None
            if planned is not None:
                specs, offsets = planned
                positions = list(range(w.index, len(specs), workers))
                items = (positions, [specs[k] for k in positions], [float(offsets[k]) for k in positions])
            w.send(("job", WorkerJob(w.index, bare_target, tokenizer, plan, items, users[w.index],
                                     users[w.index] or max(1, OPEN_LOOP_PREWARM // workers), buffers[w.index])))
        for w in started:
            message = await asyncio.wait_for(_read(w.reader), READY_TIMEOUT_S)
            if message != ("ready",):  # it exited before it was ready; its own error is on stderr
                raise LoadgenError(f"client worker {w.index} failed to start (exit code {w.process.poll()})")
        origin_ns = time.perf_counter_ns() + 5_000_000  # every worker has the origin before it arrives
        for w in started:
            w.send(("go", origin_ns))

        def stop_all() -> None:
            for w in started:
                w.send(("stop",))

        async def listen(w: _Worker) -> None:
            nonlocal stopped_early
            fed_all = next_item is None
            while True:
                message = await _read(w.reader)
                if message is None:
                    if not w.finished:
                        raise LoadgenError(f"client worker {w.index} exited mid-run (exit code "
                                           f"{w.process.wait()}); the records it returned are kept")
                    return
                kind = message[0]
                if kind == "record":
                    on_record(message[1])
                    reason = limit_check.add(message[1])
                    if reason and stopped_early is None:
                        stopped_early = reason
                        stop_all()
                elif kind == "want" and not fed_all:
                    item = await next_item()
                    if item is None:
                        fed_all = True
                        w.send(("end",))
                    else:
                        w.send(("specs", [item]))
                elif kind == "done":
                    w.cpu_s, w.wall_s, w.finished = message[1], message[2], True
                    return

        listeners = [asyncio.create_task(listen(w)) for w in started]
        try:
            await asyncio.shield(asyncio.gather(*listeners))
        except asyncio.CancelledError:
            interrupted = stopped_early is None
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            stop_all()
            await asyncio.wait(listeners, timeout=STOP_GRACE_S)
        for t in listeners:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        for w in started:
            w.writer.close()
            try:
                w.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait()
    wall = (time.perf_counter_ns() - origin_ns) / 1e9
    return LoadOutcome(origin_ns, [], interrupted, wall, stopped_early, limit_check.done,
                       [{"worker": w.index, "cpu_s": w.cpu_s, "wall_s": w.wall_s} for w in started])


# -- worker ---------------------------------------------------------------------------------------------------
async def _work(fd: int) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    message = await _read(reader)
    if message is None:
        return
    job: WorkerJob = message[1]
    target = job.target
    if job.tokenizer:
        from loadgen.prompts import HFTokenizer

        target = replace(target, count_tokens=HFTokenizer(job.tokenizer).count)
    queue: deque = deque(job.closed_items)
    arrived = asyncio.Event()
    ended = False

    def done(record: RequestRecord) -> None:
        record.worker = job.index
        writer.write(_frame(("record", record)))

    async def next_item():
        while not queue:
            if ended:
                return None
            arrived.clear()
            await arrived.wait()
        writer.write(_frame(("want",)))
        return queue.popleft()

    limit = 0 if job.open_items is not None else job.concurrency
    async with make_session(limit) as session:
        await open_connections(session, target, job.prewarm)
        gc.collect()
        gc.freeze()
        writer.write(_frame(("ready",)))
        message = await _read(reader)
        if message is None or message[0] != "go":
            return
        origin_ns = message[1]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if job.open_items is not None:
            positions, specs, offsets = job.open_items
            import numpy as np

            load = asyncio.create_task(_open_loop(session, target, (specs, np.asarray(offsets, dtype=float)), job.plan,
                                                  origin_ns, done, positions))
        else:
            while (delay := (origin_ns - time.perf_counter_ns()) / 1e9) > 0:
                await asyncio.sleep(delay)
            load = asyncio.create_task(_closed_loop(session, target, next_item, job.plan, origin_ns, done,
                                                    job.concurrency))

        async def control() -> None:
            nonlocal ended
            while True:
                message = await _read(reader)
                if message is None or message[0] == "stop":
                    load.cancel()
                    return
                if message[0] == "specs":
                    queue.extend(message[1])
                elif message[0] == "end":
                    ended = True
                arrived.set()

        listener = asyncio.create_task(control())
        try:
            await load
        except asyncio.CancelledError:
            pass
        listener.cancel()
        writer.write(_frame(("done", time.process_time() - cpu0, time.perf_counter() - wall0)))
        await writer.drain()
    writer.close()


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole process group: the parent decides, and tells the workers to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from backends import eventloop

    try:
        eventloop.run(_work(int(argv[0])))
    except (ConnectionError, BrokenPipeError):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
