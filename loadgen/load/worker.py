"""A client worker process (`--workers N`): runs its share of the plan with the same plan classes as a local run,
streaming each record back to the parent (loadgen/load/processes.py) the moment its request ends.

    python -m loadgen.load.worker FD    (started by the parent, never by hand)
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import replace

from loadgen.client import StreamActivity, make_session, open_connections
from loadgen.load import channel
from loadgen.load.arrivals import FedSchedule
from loadgen.load.plans import Sender, shape_of
from loadgen.load.processes import WorkerJob, activity_period
from loadgen.load.stop import StopSignal
from loadgen.records import RequestRecord


class _ParentFeed:
    """The closed loop's source of work in a worker: the items it started with, then one more from the parent
    for each one its users take, until the parent says the plan's count is issued."""

    def __init__(self, items: list, writer: asyncio.StreamWriter):
        self.queue: deque = deque(items)
        self.arrived = asyncio.Event()
        self.ended = False
        self.writer = writer

    def add(self, items: list) -> None:
        self.queue.extend(items)
        self.arrived.set()

    def end(self) -> None:
        self.ended = True
        self.arrived.set()

    async def __call__(self):
        while not self.queue:
            if self.ended:
                return None
            self.arrived.clear()
            await self.arrived.wait()
        if not self.writer.is_closing():  # closed: the parent is gone, and the stop follows
            self.writer.write(channel.frame(("want",)))
        return self.queue.popleft()


async def _report_activity(activity: StreamActivity, period_s: float, writer: asyncio.StreamWriter) -> None:
    """The parent's stall watchdog watches every worker's streams together (WorkersActivity says why): tell it
    this worker's in-flight count and since when they have been quiet, whenever that changed."""
    last = None
    while not writer.is_closing():
        now = (activity.in_flight, activity.quiet_since_ns())
        if now != last:
            writer.write(channel.frame(("activity", *now)))
            last = now
        await asyncio.sleep(period_s)


async def _work(fd: int) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    message = await channel.read(reader)
    if message is None:
        return
    job: WorkerJob = message[1]
    target = job.target
    if job.tokenizer:
        from loadgen.workload.prompts import HFTokenizer

        target = replace(target, count_tokens=HFTokenizer(job.tokenizer).count)
    shape, share = shape_of(job.plan), job.share
    # The parent sends later items: an open loop's ahead of their send time, a closed loop's as its users take them.
    feed = FedSchedule(share.work) if job.plan.mode == "open" else _ParentFeed(share.work, writer)
    stop = StopSignal()

    def done(record: RequestRecord) -> None:
        if writer.is_closing():  # the parent is gone (killed): nobody to record for, so stop
            stop.request()
            return
        record.worker = job.index
        writer.write(channel.frame(("record", record)))

    async with make_session(share.users) as session:  # an open loop's 0: no limit, the client never queues
        await open_connections(session, target, share.connections)
        gc.collect()
        gc.freeze()
        writer.write(channel.frame(("ready",)))
        message = await channel.read(reader)
        if message is None or message[0] != "go":
            return
        origin_ns = message[1]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if job.plan.mode == "closed":  # users start at the origin; an open loop's offsets are from it already
            while (delay := (origin_ns - time.perf_counter_ns()) / 1e9) > 0:
                await asyncio.sleep(delay)
        sender = Sender(session, target, job.plan, origin_ns, done)
        load = asyncio.create_task(shape.drive(sender, feed, stop, share.users))
        stop.on_request(load.cancel)
        reporter = None
        if job.plan.stall_timeout_s:
            reporter = asyncio.create_task(_report_activity(sender.activity, activity_period(job.plan.stall_timeout_s),
                                                            writer))

        async def control() -> None:
            while True:
                message = await channel.read(reader)
                if message is None or message[0] == "stop":
                    stop.request()
                    return
                if message[0] == "specs":
                    feed.add(message[1])
                elif message[0] == "end":
                    feed.end()

        listener = asyncio.create_task(control())
        try:
            await load
        except asyncio.CancelledError:
            pass
        listener.cancel()
        if reporter is not None:
            reporter.cancel()
        if not writer.is_closing():
            writer.write(channel.frame(("done", time.process_time() - cpu0, time.perf_counter() - wall0)))
            await writer.drain()
    writer.close()
    # drain() returns once the buffer is under its high-water mark, not empty: without waiting for the close,
    # the loop could end with the last records and "done" unsent, and the parent see a worker that "exited
    # mid-run (exit code 0)" (seen once in CI, a closed loop stopping at an error limit with 2 workers).
    try:
        await writer.wait_closed()
    except (ConnectionError, BrokenPipeError):
        pass  # the parent is gone: nobody to deliver to


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
