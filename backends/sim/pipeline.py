"""The engine's clocks, shared by the live engine (engine.py) and the virtual-time replay (replay.py) so both wait
and step alike: the front end's token queue, the arrival lag, and the CPU/GPU step pipeline. Every method takes
and returns seconds on whatever clock the caller keeps (perf_counter live, virtual in the replay)."""

from __future__ import annotations

from backends.sim.roofline import IterationCost
from backends.sim.scheduler import ContinuousBatchScheduler, SimRequest


class FrontEnd:
    """The serving front end (API server) as one first-in-first-out worker on a clock of seconds: each streamed
    token costs it `token_s`; a new request is taken in once the tokens ahead of it are processed. Used by the
    live sim and by the virtual-time replay, so both wait the same way."""

    def __init__(self, token_s: float):
        self.token_s = token_s
        self.free_at = 0.0

    def intake(self, t: float) -> float:
        """When a request that arrived at `t` is through the front end."""
        self.free_at = max(self.free_at, t)
        return self.free_at

    def deliver(self, t: float, tokens: int) -> float:
        """When `tokens` produced by a step that ended at `t` reach the client."""
        self.free_at = max(self.free_at, t) + tokens * self.token_s
        return self.free_at


class ArrivalLag:
    """Requests that reach a busy engine wait `steps` more step boundaries before they may be scheduled (the
    engine plans a step ahead); an idle engine takes them at once. Used by the live sim and the replay."""

    def __init__(self, steps: int):
        self._held: list[list[SimRequest]] = [[] for _ in range(steps)]

    def boundary(self, scheduler: ContinuousBatchScheduler) -> None:
        """A step boundary: the requests whose wait is over join the scheduler."""
        if self._held:
            for request in self._held.pop(0):
                scheduler.add(request)
            self._held.append([])

    def arrive(self, scheduler: ContinuousBatchScheduler, request: SimRequest) -> None:
        if self._held and scheduler.has_work:
            self._held[-1].append(request)
        else:
            scheduler.add(request)

    def drop(self, rid: str) -> None:
        for held in self._held:
            held[:] = [r for r in held if r.rid != rid]

    @property
    def waiting(self) -> bool:
        return any(self._held)


class StepPipeline:
    """The engine's two clocks under asynchronous scheduling (vLLM's default): its CPU thread schedules step k+1 and
    launches its kernels while the GPU still runs step k, then waits for step k's output and hands it on. So a
    step's launch is hidden behind the GPU unless it is the longer (a step off the CUDA graph, launched kernel by
    kernel), its tokens leave once the next step is launched and its GPU work is done, and a request that arrives
    meanwhile is scheduled at the next such boundary. Used by the live sim and the replay, so both step alike."""

    def __init__(self) -> None:
        self.gpu_free = 0.0

    def launch(self, t: float, cost: IterationCost) -> tuple[float, float]:
        """A step scheduled at `t`: when its launches end (the CPU is free again) and when the GPU finishes it.
        The GPU takes kernels as they are launched, after the step before."""
        launched = t + cost.launch_s
        start = max(self.gpu_free, t)
        self.gpu_free = max(start + cost.seconds, launched + cost.tail_s)
        return launched, self.gpu_free
