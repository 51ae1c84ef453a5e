"""The largest open-loop rate one engine serves under an SLO, found by bisection on replayed load points.

A point meets the SLO when the chosen percentile of every limited metric is within its limit *and* the engine kept
up: a rate the engine cannot sustain is infeasible even when the requests of a short point still met the SLO (its
queue grows without bound; loadgen.pace's verdict, applied to the replay's arrivals and completions). Replays are
virtual-time (backends.sim.replay.replay), so a point costs milliseconds and every prediction is simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from backends.sim.config import SimConfig
from backends.sim.replay import ReplayedRequest, replay
from loadgen.pace import kept_up
from loadgen.plan.workload import PlanWorkload

PLANNED_METRICS = ("ttft", "tpot", "e2el")
_GRID = 256  # samples of the cumulative counts for the keeping-up fit


@dataclass(frozen=True)
class Slo:
    """Per-metric limits in milliseconds, each met at `percentile` (e.g. TTFT p90 <= 100 ms)."""

    limits_ms: dict[str, float]
    percentile: float = 90.0

    def text(self) -> str:
        return ", ".join(f"{k.upper()} p{self.percentile:g} <= {v:g} ms" for k, v in self.limits_ms.items())


@dataclass(frozen=True)
class PointSize:
    """Requests per replayed point: `seconds` of arrivals, at least `min_requests`, at most `max_requests`."""

    seconds: float = 30.0
    min_requests: int = 200
    max_requests: int = 4000

    def requests(self, rate: float) -> int:
        return int(min(self.max_requests, max(self.min_requests, math.ceil(self.seconds * rate))))


@dataclass(frozen=True)
class PointPrediction:
    """One replayed load point (SIMULATED)."""

    rate_per_s: float
    requests: int
    percentiles_ms: dict[str, float]  # metric -> the SLO's percentile of it
    slo_fraction: float  # requests meeting every limit
    kept_up: bool | None
    pace_note: str
    mean_e2el_s: float
    meets: bool
    failed: tuple[str, ...] = ()


@dataclass
class EngineResult:
    """What the search found for one engine: its max rate under the SLO (None when no rate meets it)."""

    max_rate_per_s: float | None
    at_max: PointPrediction | None
    reason: str = ""
    replays: int = 0
    requests_simulated: int = 0
    probes: list[tuple[float, bool]] = field(default_factory=list)


def _pace(done: list[ReplayedRequest]) -> dict:
    """loadgen.pace.pace's figures from a replay's requests (all measured, all completed)."""
    sends = np.sort([r.arrival_s for r in done])
    finishes = np.sort([r.arrival_s + r.e2el_s for r in done])
    first, last, fit_from = float(sends[0]), float(sends[-1]), float(finishes[0])
    out = {"requests": len(done), "arrival_window_s": last - first, "first_latency_s": fit_from - first,
           "fit_from_s": fit_from, "fit_to_s": last, "offered_per_s": None, "achieved_per_s": None,
           "in_flight_start": None, "in_flight_end": None, "in_flight_mean": None}
    if last - fit_from <= 0:
        return out
    t = np.linspace(fit_from, last, _GRID)
    sent_n = np.searchsorted(sends, t, side="right")
    done_n = np.searchsorted(finishes, t, side="right")
    queue = (sent_n - done_n).astype(float)
    tenth = _GRID // 10
    out.update(offered_per_s=float(np.polyfit(t, sent_n, 1)[0]), achieved_per_s=float(np.polyfit(t, done_n, 1)[0]),
               in_flight_start=float(queue[:tenth].mean()), in_flight_end=float(queue[-tenth:].mean()),
               in_flight_mean=float(queue.mean()))
    return out


def judge_point(done: list[ReplayedRequest], rate: float, slo: Slo) -> PointPrediction:
    values = {"ttft": np.array([r.ttft_s for r in done]) * 1e3,
              "e2el": np.array([r.e2el_s for r in done]) * 1e3,
              "tpot": np.array([r.tpot_s if r.tpot_s is not None else 0.0 for r in done]) * 1e3}
    pct = {k: float(np.percentile(values[k], slo.percentile)) for k in slo.limits_ms}
    ok = np.ones(len(done), dtype=bool)
    for k, limit in slo.limits_ms.items():
        ok &= values[k] <= limit
    verdict, note = kept_up(_pace(done))
    failed = tuple(f"{k} p{slo.percentile:g} {pct[k]:.1f} ms > {limit:g} ms"
                   for k, limit in slo.limits_ms.items() if pct[k] > limit)
    if verdict is not True:
        failed += ("fell behind" if verdict is False else "too short to tell whether it kept up",)
    return PointPrediction(rate, len(done), pct, float(ok.mean()), verdict, note,
                           float(values["e2el"].mean() / 1e3), not failed, failed)


def predict_point(config: SimConfig, workload: PlanWorkload, rate: float, size: PointSize, seed: int,
                  slo: Slo) -> PointPrediction:
    n = size.requests(rate)
    done = replay(config, 0, 0, n, send_times=workload.send_times(rate, n, seed), lengths=workload.take(n))
    return judge_point(done, rate, slo)


def max_rate(config: SimConfig, workload: PlanWorkload, slo: Slo, size: PointSize = PointSize(), seed: int = 0,
             rel_tol: float = 0.02, guess: float | None = None) -> EngineResult:
    """Bisection between a rate that meets the SLO and one that does not, to `rel_tol` of the rate. The first
    probe is `guess` (a similar engine's max rate: two probes settle it when it is right) or else one request in
    flight on average (the lone request's end-to-end latency); the rate doubles until one fails, or halves until
    one meets (giving up below 1/64 of the first), then bisects. An engine that misses the SLO with one request at
    a time (a closed loop of one user) misses it at every rate and is not searched."""
    result = EngineResult(None, None)

    def probe(rate: float) -> PointPrediction:
        point = predict_point(config, workload, rate, size, seed, slo)
        result.replays += 1
        result.requests_simulated += point.requests
        result.probes.append((rate, point.meets))
        return point

    lone = replay(config, 0, 0, 20, concurrency=1, lengths=workload.take(20))
    result.replays += 1
    result.requests_simulated += len(lone)
    alone = judge_point(lone, 0.0, slo)
    slow = [f for f in alone.failed if "kept up" not in f and f != "fell behind"]
    if slow:  # one request at a time is the best any rate can do
        result.reason = f"misses the SLO even one request at a time: {'; '.join(slow)}"
        return result
    start = guess if guess else 1.0 / float(np.mean([r.e2el_s for r in lone]))
    step = 1 + rel_tol if guess else 2.0  # from a guess, look just past it first
    point = probe(start)
    if point.meets:
        lo, best = start, point
        hi = None
        for _ in range(60):
            nxt = probe(lo * step)
            if not nxt.meets:
                hi = lo * step
                break
            lo, best = lo * step, nxt
            step = 2.0
        if hi is None:
            result.reason = f"meets the SLO up to {lo:.3g} req/s, the search's ceiling"
    else:
        hi, lo, best = start, None, None
        first_fail = point
        while hi > start / 64:
            nxt = probe(hi / step)
            if nxt.meets:
                lo, best = hi / step, nxt
                break
            hi /= step
            step = 2.0
        if lo is None:
            result.reason = (f"no rate down to {hi:.3g} req/s meets the SLO: at {start:.3g} req/s "
                             f"{'; '.join(first_fail.failed)}")
            return result
    while hi is not None and hi / lo > 1 + rel_tol:
        mid = math.sqrt(lo * hi)
        point = probe(mid)
        if point.meets:
            lo, best = mid, point
        else:
            hi = mid
    result.max_rate_per_s, result.at_max = lo, best
    return result
