"""Open-loop arrival schedules: when each request is sent, independent of when earlier ones finish, and the
schedule that pairs each send time with its spec, made just ahead of it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from loadgen.errors import LoadgenError
from loadgen.workload.specs import RequestSpec

ARRIVAL_KINDS = ("poisson", "gamma", "constant")


@dataclass(frozen=True)
class ArrivalProcess:
    """`rate` requests/s. Gamma inter-arrivals have shape = burstiness and mean 1/rate, so their
    coefficient of variation is 1/sqrt(burstiness): burstiness 1 is Poisson, < 1 burstier, > 1 smoother."""

    kind: str
    rate: float
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ARRIVAL_KINDS:
            raise LoadgenError(f"unknown --arrival {self.kind!r}; choose one of {', '.join(ARRIVAL_KINDS)}")
        if not self.rate > 0:
            raise LoadgenError(f"--qps must be positive, got {self.rate:g}")
        if not self.burstiness > 0:
            raise LoadgenError(f"--burstiness must be positive, got {self.burstiness:g}")

    def intervals(self, rng: np.random.Generator, n: int) -> np.ndarray:
        mean = 1.0 / self.rate
        if self.kind == "constant":
            return np.full(n, mean)
        shape = 1.0 if self.kind == "poisson" else self.burstiness
        return rng.gamma(shape, mean / shape, size=n)

    def offsets(self, rng: np.random.Generator, n: int | None = None, duration: float | None = None) -> np.ndarray:
        """Send times in seconds from the start; the first request goes at 0.
        Give n (that many requests) or duration (every arrival before it), or both (whichever ends first)."""
        if n is None and duration is None:
            raise LoadgenError("give --num-requests or --duration")
        if n is not None:
            times = np.concatenate(([0.0], np.cumsum(self.intervals(rng, n - 1)))) if n > 0 else np.zeros(0)
            return times[times < duration] if duration is not None else times
        assert duration is not None
        batch = max(16, int(duration * self.rate * 1.2) + 16)
        times = np.concatenate(([0.0], np.cumsum(self.intervals(rng, batch))))
        while times[-1] < duration:  # ran short of the duration: draw more
            times = np.concatenate((times, times[-1] + np.cumsum(self.intervals(rng, batch))))
        return times[times < duration]

    def chunks(self, rng: np.random.Generator, n: int | None = None, duration: float | None = None,
               size: int = 4096) -> Iterator[np.ndarray]:
        """The same send times as `offsets`, bit for bit (the same draws, added up in the same order), a few
        thousand at a time: a long run never holds its whole schedule."""
        if n is None and duration is None:
            raise LoadgenError("give --num-requests or --duration")
        return self._chunks(rng, n, duration, size)

    def _chunks(self, rng: np.random.Generator, n: int | None, duration: float | None,
                size: int) -> Iterator[np.ndarray]:
        def summed(base: float, count: int) -> Iterator[np.ndarray]:
            """base + the running sum of `count` intervals (the running sum from 0, as np.cumsum makes it)."""
            carry = 0.0
            for start in range(0, count, size):
                run = np.cumsum(np.concatenate(([carry], self.intervals(rng, min(size, count - start)))))[1:]
                carry = float(run[-1])
                yield base + run

        def until(parts: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            """Times are non-decreasing: the first one at or past the duration ends them."""
            for part in parts:
                if duration is not None and part[-1] >= duration:
                    yield part[: int(np.searchsorted(part, duration, side="left"))]
                    return
                yield part

        if n == 0 or (duration is not None and duration <= 0.0):
            return
        yield np.zeros(1)  # the first request goes at 0
        if n is not None:
            yield from until(summed(0.0, n - 1))
            return
        assert duration is not None
        batch = max(16, int(duration * self.rate * 1.2) + 16)
        base, last = 0.0, 0.0
        while True:
            for part in summed(base, batch):
                last = float(part[-1])
                if last >= duration:
                    yield part[: int(np.searchsorted(part, duration, side="left"))]
                    return
                yield part
            base = last  # offsets(): the next batch is times[-1] + its own running sum


# How far ahead of its send time a spec is made: far enough that a send never waits on synthesis (about 0.15 ms
# a 512-token prompt without a tokenizer, about 1 ms with one), near enough that memory is a few seconds of
# prompts, not the run's. At least AHEAD_MIN are kept ready (a burst), at most AHEAD_MAX (a very high rate).
AHEAD_S = 2.0
AHEAD_MIN = 16
AHEAD_MAX = 4096
# Making stops when the next send is due within this margin plus what one spec has been taking to make, so the
# send is not late behind it.
SPARE_S = 0.0005

Item = tuple[int, RequestSpec, float]  # (position in the schedule, spec, send offset in seconds)


class Schedule:
    """An open loop's work, made as the run goes: send offsets come a few thousand at a time
    (`ArrivalProcess.chunks`: the same values as drawing them all at once), and each spec is taken from the
    workload's seeded stream a little ahead of its send time, in the event loop's idle time before a send. The
    same seed gives the same specs at the same offsets as when every prompt was made up front; memory is a few
    seconds of prompts whatever the run's length, and the first request goes out without waiting for the last
    one's prompt."""

    def __init__(self, offsets: Iterable[np.ndarray], specs: Iterator[RequestSpec]):
        self._chunks = iter(offsets)
        self._offsets: deque[float] = deque()  # the drawn offsets not yet paired with a spec
        self._specs = specs
        self._made = 0  # positions whose spec has been made
        self.ready: deque[Item] = deque()
        self._cost_s = 0.0  # what making one spec has been taking (a moving average)

    def _next_offset(self) -> float | None:
        while not self._offsets:
            chunk = next(self._chunks, None)
            if chunk is None:
                return None
            self._offsets.extend(chunk.tolist())
        return self._offsets[0]

    @property
    def made(self) -> int:
        return self._made

    def _make_one(self) -> bool:
        offset = self._next_offset()
        if offset is None:
            return False
        t0 = time.perf_counter()
        spec = next(self._specs, None)
        self._cost_s += (time.perf_counter() - t0 - self._cost_s) / 8
        if spec is None:  # a finite workload ran out before the offsets did: the schedule ends with it
            self._offsets.clear()
            self._chunks = iter(())
            return False
        self._offsets.popleft()
        self.ready.append((self._made, spec, offset))
        self._made += 1
        return True

    def make_next(self, now_s: float, until_s: float | None = None, clock: Callable[[], float] | None = None) -> bool:
        """Make one more spec if one is due before now_s + AHEAD_S (or fewer than AHEAD_MIN are ready, and at
        most AHEAD_MAX); with `until_s`, not if `clock()` would pass it (the next send is due) making it. True
        when one was made: the caller lets the event loop run before asking again, so making prompts (about
        2 ms each with a tokenizer) never holds up the streams being timed by more than one prompt."""
        if len(self.ready) >= AHEAD_MAX or (offset := self._next_offset()) is None:
            return False
        if len(self.ready) >= AHEAD_MIN and offset >= now_s + AHEAD_S:
            return False
        if until_s is not None and clock is not None and clock() + self._cost_s >= until_s:
            return False
        return self._make_one()

    def make_ahead(self, now_s: float, until_s: float | None = None, clock: Callable[[], float] | None = None) -> None:
        """make_next until it has nothing to make: before the clock starts (the first window), and in tests."""
        while self.make_next(now_s, until_s, clock):
            pass

    def take(self) -> Item | None:
        """The next item, made now if making ahead fell behind (its lateness is then recorded, as any)."""
        if not self.ready and not self._make_one():
            return None
        return self.ready.popleft()

    async def next(self) -> Item | None:
        return self.take()

    def first_window(self) -> list[Item]:
        """The items a run starts with: those due in its first AHEAD_S (at least AHEAD_MIN)."""
        self.make_ahead(0.0)
        items = list(self.ready)
        self.ready.clear()
        return items

    async def push(self, workers: int, send: Callable[[int, list[Item] | None], None], origin_ns: int,
                   stopped: Callable[[], bool]) -> None:
        """--workers: deal item p to worker p mod `workers` (whatever `workers` is, the same requests at the same
        offsets), each about AHEAD_S before it is due, in batches; `send(k, None)` tells worker k the schedule
        is over. Prompts are made here, in the parent, from the one seeded stream."""
        exhausted = False
        while not exhausted and not stopped():
            horizon = (time.perf_counter_ns() - origin_ns) / 1e9 + AHEAD_S
            batches: list[list[Item]] = [[] for _ in range(workers)]
            while True:
                upcoming = self._next_offset()
                if upcoming is None and not self.ready:
                    exhausted = True
                    break
                if not self.ready and upcoming is not None and upcoming >= horizon:
                    break
                if self.ready and self.ready[0][2] >= horizon:
                    break
                item = self.take()
                if item is None:
                    exhausted = True
                    break
                batches[item[0] % workers].append(item)
                await asyncio.sleep(0)  # let the records in between prompts: making a batch can take a while
            for k, batch in enumerate(batches):
                if batch:
                    send(k, batch)
            if not exhausted:
                await asyncio.sleep(AHEAD_S / 4)
        for k in range(workers):
            send(k, None)


class FedSchedule:
    """A worker's part of an open loop (`--workers`): the items it started with, then batches from the parent
    (Schedule.push) until the parent says the schedule is over."""

    def __init__(self, items: list[Item]):
        self.queue: deque[Item] = deque(items)
        self.arrived = asyncio.Event()
        self.ended = False

    def add(self, items: list[Item]) -> None:
        self.queue.extend(items)
        self.arrived.set()

    def end(self) -> None:
        self.ended = True
        self.arrived.set()

    def make_next(self, now_s: float, until_s: float | None = None, clock: Callable[[], float] | None = None) -> bool:
        """The parent makes them."""
        return False

    async def next(self) -> Item | None:
        while not self.queue:
            if self.ended:
                return None
            self.arrived.clear()
            await self.arrived.wait()
        return self.queue.popleft()
