"""Bootstrap confidence intervals for a run's latency statistics and for the difference between two runs.

Why a bootstrap: the statistics compared are percentiles of skewed, often multi-modal latency distributions, for
which no normal-theory formula holds; a percentile bootstrap needs only that the resampled units are independent.

Why requests are the unit: a request's ITL gaps are correlated (one request's decode steps share a batch), so the
gaps of a request are resampled together (a cluster bootstrap); for TTFT, TPOT and E2EL a request is one value.

Why runs are resampled too when a side has several (a two-level bootstrap: runs, then requests within each run):
requests of one run share that run's server state (which requests were batched together, caches, clocks, the
neighbours on the host), so resampling requests only measures how well one run pins down its own statistic. Two
runs of the same vLLM server on identical send times on an H100 moved the median TTFT by 7.5%, more than the
within-run interval of a run of a few hundred requests; only repeats show that variation, and only resampling them
carries it into the interval. A side's statistic is then the mean over its runs of each run's statistic (the mean
of the repeats), and a replicate is the mean over runs drawn with replacement, each itself resampled by request.
With few repeats (2-3) the run level is coarse and the interval still somewhat narrow (a bootstrap of K runs sees
(K-1)/K of their variance): more repeats make it honest. With one run per side the interval covers sampling noise
within that run only. Neither are a run's requests strictly independent (a queue makes neighbours alike, which an
iid resample of requests ignores): one more reason the run level matters.

Why a statistic needs enough values beyond it: a resample never holds a value above the run's maximum, so the
percentile bootstrap of an extreme percentile is too narrow when few values lie beyond it. Simulated coverage of the
95% interval of p99 (exponential values, 400 draws each): 63% with 100 values, 92% with 1,000, 94% with 3,000; so
a statistic is tested only with at least MIN_BEYOND values on its far side (p99: 1,000 values a run; p50: 20).

The percentile of a resample is numpy's (linear interpolation, as loadgen.metrics computes every percentile),
computed from integer resampling weights rather than by materialising each resample, so a run's ITL (hundreds of
thousands of gaps) costs one pass over its values per resample. Everything is a pure function of its inputs and a
seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from loadgen.metrics import PERCENTILES

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
MIN_BEYOND = 10  # values a run needs beyond a percentile (on the nearer tail) for its interval to be trusted
_CHUNK_ELEMENTS = 1 << 22  # resamples are processed in blocks of about this many (resample x value) cells


def _quantile_of(stat: str) -> float | None:
    """The percentile q of "p50"/"p99"/... (None for "mean"); the names loadgen.metrics uses."""
    if stat == "mean":
        return None
    if stat not in PERCENTILES:
        raise ValueError(f"unknown statistic {stat!r}; use 'mean' or one of {', '.join(PERCENTILES)}")
    return PERCENTILES[stat]


def min_values(stat: str) -> int:
    """Values a run needs for `stat` to be tested: MIN_BEYOND beyond the percentile (the mean: as for p50)."""
    q = _quantile_of(stat)
    tail = 50.0 if q is None else min(q, 100.0 - q)
    return math.ceil(MIN_BEYOND * 100.0 / tail - 1e-9)


@dataclass(frozen=True)
class RequestValues:
    """One run's values of one metric, grouped by request (the unit that is resampled). Requests without a value
    (a one-token answer has no ITL gap) are left out."""

    values: np.ndarray  # every value, sorted
    owner: np.ndarray  # the request (0..n-1) each sorted value belongs to
    sums: np.ndarray  # per request: sum of its values
    counts: np.ndarray  # per request: number of values

    @classmethod
    def from_requests(cls, per_request: Sequence[Sequence[float]]) -> RequestValues:
        groups = [np.asarray(g, dtype=float) for g in per_request if len(g)]
        if not groups:
            raise ValueError("no values to resample")
        flat = np.concatenate(groups)
        owner = np.repeat(np.arange(len(groups)), [g.size for g in groups])
        order = np.argsort(flat, kind="stable")
        return cls(flat[order], owner[order], np.array([g.sum() for g in groups]),
                   np.array([g.size for g in groups]))

    @classmethod
    def from_values(cls, values: Sequence[float]) -> RequestValues:
        """One value per request (TTFT, TPOT, E2EL)."""
        return cls.from_requests([[v] for v in values])

    @property
    def requests(self) -> int:
        return int(self.counts.size)

    def estimate(self, stat: str) -> float:
        """The statistic itself, exactly as loadgen.metrics.distribution computes it."""
        q = _quantile_of(stat)
        return float(self.values.mean() if q is None else np.percentile(self.values, q))

    def replicates(self, stats: Sequence[str], count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` bootstrap replicates of each statistic, shape (count, len(stats)): requests drawn with
        replacement (as many as the run has), each bringing all its values."""
        n = self.requests
        out = np.empty((count, len(stats)))
        chunk = max(1, _CHUNK_ELEMENTS // max(self.values.size, n))
        for start in range(0, count, chunk):
            w = _draw_counts(n, min(chunk, count - start), rng)  # (c, n): how often each request was drawn
            rows = slice(start, start + w.shape[0])
            quantiles = [_quantile_of(s) for s in stats]
            if any(q is not None for q in quantiles):
                cum = np.cumsum(np.take(w, self.owner, axis=1), axis=1, dtype=np.int32)  # (c, values): running count
            for k, q in enumerate(quantiles):
                if q is None:
                    out[rows, k] = (w @ self.sums) / (w @ self.counts)
                else:
                    out[rows, k] = _weighted_percentile(self.values, cum, q)
        return out


def _draw_counts(n: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Per resample, how many times each of n requests was drawn in n draws with replacement."""
    draws = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n).astype(np.int32)


def _weighted_percentile(values: np.ndarray, cum: np.ndarray, q: float) -> np.ndarray:
    """np.percentile (linear) of each resample, where resample r holds sorted value i cum[r,i]-cum[r,i-1] times."""
    total = cum[:, -1]
    h = (total - 1) * (q / 100.0)
    lo = np.floor(h)
    frac = h - lo
    hi = np.minimum(lo + 1, total - 1)
    # the expanded position p falls on the first value whose running count exceeds p
    k_lo = np.array([np.searchsorted(row, p, side="right") for row, p in zip(cum, lo)])
    k_hi = np.array([np.searchsorted(row, p, side="right") for row, p in zip(cum, hi)])
    a, b = values[k_lo], values[k_hi]
    return a + frac * (b - a)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int

    def excludes(self, value: float = 0.0) -> bool:
        return value < self.low or value > self.high

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class Difference:
    """B against A for one statistic: B - A and B/A - 1, each with its interval (from the same replicates, so they
    agree on whether 0 is excluded). `ratio` is None when A's statistic is 0."""

    stat: str
    a: float
    b: float
    diff: Interval
    ratio: Interval | None
    runs: tuple[int, int]  # runs on each side (1 = requests resampled only)

    @property
    def significant(self) -> bool:
        return self.diff.excludes(0.0)


def _interval(estimate: float, replicates: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), level, int(replicates.size))


def side_estimate(runs: Sequence[RequestValues], stat: str) -> float:
    """A side's statistic: the mean over its runs of each run's statistic (one run: that run's)."""
    return float(np.mean([r.estimate(stat) for r in runs]))


def side_replicates(runs: Sequence[RequestValues], stats: Sequence[str], count: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Two-level replicates (count, len(stats)): draw as many runs as there are, with replacement; resample each
    drawn run by request (a run drawn twice is resampled twice, independently); average over the drawn runs."""
    if len(runs) == 1:
        return runs[0].replicates(stats, count, rng)
    k = len(runs)
    choice = rng.integers(0, k, size=(count, k))
    drawn = np.empty((count, k, len(stats)))
    for j, run in enumerate(runs):
        mask = choice == j
        if mask.any():
            drawn[mask] = run.replicates(stats, int(mask.sum()), rng)
    return drawn.mean(axis=1)


def _as_runs(side: RequestValues | Sequence[RequestValues]) -> list[RequestValues]:
    runs = [side] if isinstance(side, RequestValues) else list(side)
    if not runs:
        raise ValueError("a side needs at least one run")
    return runs


def interval(side: RequestValues | Sequence[RequestValues], stat: str = "p50", *, resamples: int = RESAMPLES,
             level: float = LEVEL, seed: int | Sequence[int] = SEED) -> Interval:
    """The bootstrap interval of one side's statistic (one run, or the mean over repeats)."""
    runs = _as_runs(side)
    reps = side_replicates(runs, [stat], resamples, np.random.default_rng(seed))[:, 0]
    return _interval(side_estimate(runs, stat), reps, level)


def differences(a: RequestValues | Sequence[RequestValues], b: RequestValues | Sequence[RequestValues],
                stats: Sequence[str] = ("p50", "p99"), *, resamples: int = RESAMPLES, level: float = LEVEL,
                seed: int | Sequence[int] = SEED) -> dict[str, Difference]:
    """B against A for each statistic: the sides are resampled independently (each from its own seeded stream),
    and the interval of B - A and of B/A - 1 is taken over the paired replicates."""
    runs_a, runs_b = _as_runs(a), _as_runs(b)
    seq_a, seq_b = np.random.SeedSequence(seed).spawn(2)
    reps_a = side_replicates(runs_a, stats, resamples, np.random.default_rng(seq_a))
    reps_b = side_replicates(runs_b, stats, resamples, np.random.default_rng(seq_b))
    out = {}
    for k, stat in enumerate(stats):
        est_a, est_b = side_estimate(runs_a, stat), side_estimate(runs_b, stat)
        ra, rb = reps_a[:, k], reps_b[:, k]
        ratio = None
        if est_a != 0 and np.all(ra != 0):
            ratio = _interval(est_b / est_a - 1, rb / ra - 1, level)
        out[stat] = Difference(stat, est_a, est_b, _interval(est_b - est_a, rb - ra, level), ratio,
                               (len(runs_a), len(runs_b)))
    return out
