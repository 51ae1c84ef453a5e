"""Per-run time series for plots: offered and achieved rates, requests in flight, token throughput.

Pure functions of RequestRecords (times in seconds since the run's origin), so the pictures in a report
are recomputable from requests.jsonl like every other figure.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from loadgen.records import RequestRecord


def bin_edges(records: Sequence[RequestRecord], width_s: float) -> np.ndarray:
    if not records:
        return np.zeros(1)
    end = max(r.finished_s for r in records)
    return np.arange(0.0, end + width_s, width_s)


def offered_rate(records: Sequence[RequestRecord], edges: np.ndarray) -> np.ndarray:
    """Requests per second by scheduled time (open loop) or send time (closed loop), per bin."""
    times = [r.scheduled_s if r.scheduled_s is not None else r.sent_s for r in records]
    counts, _ = np.histogram(times, bins=edges)
    return counts / np.diff(edges)


def achieved_rate(records: Sequence[RequestRecord], edges: np.ndarray) -> np.ndarray:
    """Completed (ok) requests per second, by finish time, per bin."""
    counts, _ = np.histogram([r.finished_s for r in records if r.ok], bins=edges)
    return counts / np.diff(edges)


def in_flight(records: Sequence[RequestRecord], times: np.ndarray) -> np.ndarray:
    """Requests sent and not yet finished at each of `times`."""
    sent = np.sort([r.sent_s for r in records])
    done = np.sort([r.finished_s for r in records])
    return np.searchsorted(sent, times, side="right") - np.searchsorted(done, times, side="right")


def output_token_rate(records: Sequence[RequestRecord], edges: np.ndarray) -> np.ndarray:
    """Streamed output tokens per second, by chunk arrival time, per bin."""
    times: list[float] = []
    weights: list[int] = []
    for r in records:
        ks = r.chunk_tokens or [1] * len(r.token_times_ms)
        times.extend(r.sent_s + t / 1e3 for t in r.token_times_ms)
        weights.extend(ks)
    counts, _ = np.histogram(times, bins=edges, weights=weights)
    return counts / np.diff(edges)


def auto_width(records: Sequence[RequestRecord], target_bins: int = 60) -> float:
    """A bin width giving about `target_bins` bins, rounded to 1, 2 or 5 x 10^k seconds."""
    if not records:
        return 1.0
    span = max(r.finished_s for r in records) - min(r.sent_s for r in records)
    raw = max(span / target_bins, 1e-3)
    exp = np.floor(np.log10(raw))
    for m in (1, 2, 5, 10):
        if m * 10**exp >= raw:
            return float(m * 10**exp)
    return float(10 ** (exp + 1))


def energy_joules(samples: Sequence[tuple[float, float]]) -> float:
    """Energy from (time s, power W) samples of one GPU by the trapezoid rule over the sampled span."""
    if len(samples) < 2:
        return 0.0
    t = np.array([s[0] for s in samples])
    p = np.array([s[1] for s in samples])
    return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(t)))
