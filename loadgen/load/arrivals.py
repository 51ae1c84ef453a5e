"""Open-loop arrival schedules: when each request is sent, independent of when earlier ones finish."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadgen.errors import LoadgenError

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
