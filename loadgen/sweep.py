"""Sweeps: one load point after another against one server, and the search for the saturation point."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Awaitable, Callable

from tabulate import tabulate

from loadgen.pace import Verdict, judge

# Each open-loop point sends this long of arrivals after WARMUP_S of warm-up. A point of a fixed 100 requests
# at 1,024 req/s lasts 0.1 s: a 256-sequence batch admits all of it and the run ends before a queue can grow.
# 30 s is many times the latency of a loaded engine (a few seconds), so a rate the server cannot sustain shows
# as a growing queue; the warm-up lets the batch fill before measuring.
POINT_S = 30.0
WARMUP_S = 5.0


@dataclass(frozen=True)
class PointSize:
    num_requests: int | None
    duration_s: float | None
    warmup: int
    warning: str | None = None


def point_size(qps: float | None, concurrency: int | None, num_requests: int | None, duration_s: float | None,
               warmup: int | None, batch: int | None = None) -> PointSize:
    """The size of one sweep point: POINT_S of arrivals after WARMUP_S of warm-up, unless --num-requests or
    --duration size it (then the warm-up is --warmup's, default none, as for `loadgen run`), with a warning
    when that is too short for the rate. A closed loop (concurrency) cannot outrun the server: it gets the same
    time and a first wave of warm-up."""
    by_time = num_requests is None and duration_s is None
    if qps is None:
        return PointSize(num_requests, POINT_S + WARMUP_S if by_time else duration_s,
                         warmup if warmup is not None else (concurrency or 0) if by_time else 0)
    if by_time:
        return PointSize(math.ceil(qps * POINT_S), None, math.ceil(qps * WARMUP_S) if warmup is None else warmup)
    warm = warmup or 0
    arrivals_s = num_requests / qps if num_requests is not None else duration_s - warm / qps
    warning = None
    if arrivals_s < POINT_S:
        given = f"{num_requests} requests arrive" if num_requests is not None else "the measured requests arrive"
        warning = (f"qps {qps:g}: {given} within {max(arrivals_s, 0):.3g} s, too short for a queue to show "
                   f"(a point needs {POINT_S:g} s of arrivals")
        if batch and num_requests is not None and num_requests <= batch:
            warning += f"; all {num_requests} fit in the engine's batch of {batch} at once"
        warning += "); drop --num-requests/--duration to size points by time"
    return PointSize(num_requests, duration_s, warm, warning)


def sending_seconds(size: PointSize, qps: float | None) -> float | None:
    """How long a point sends for (warm-up included), known before it runs: its arrivals at the offered rate, or
    its duration; None for a closed loop sized by a count (its pace is the server's)."""
    if size.duration_s is not None:
        return size.duration_s
    if qps:
        return ((size.num_requests or 0) + size.warmup) / qps
    return None


def progress_line(index: int, total: int | None, label: str, seconds: float | None,
                  later_seconds: float | None = None) -> str:
    """'point 2/5 (qps 4): sends for about 35 s; about 2.3 min left' -- the estimate counts sending time only
    (each point also waits for its last requests to finish)."""
    where = f"point {index}/{total}" if total else f"search point {index}"
    text = f"{where} ({label}): " + (f"sends for about {seconds:.0f} s" if seconds is not None
                                      else "a closed loop sized by count, as long as the server takes")
    if later_seconds is not None and seconds is not None:
        left = seconds + later_seconds
        text += f"; about {left / 60:.1f} min left" if left >= 90 else f"; about {left:.0f} s left"
    return text


async def find_max_rate(
    evaluate: Callable[[float], Awaitable[bool]],
    start: float,
    max_rate: float,
    precision: float = 0.05,
    max_points: int = 14,
) -> dict:
    """Highest rate at which evaluate(rate) holds, by bracketing then bisection.

    Doubles from `start` until a rate fails (or `max_rate` passes), halves if `start` itself fails, then
    bisects the bracket until it is narrower than `precision` (relative) or `max_points` were tried.
    Assumes the SLO holds below some rate and fails above it (latency grows with load).
    """
    tried: list[tuple[float, bool]] = []

    async def check(rate: float) -> bool:
        ok = await evaluate(rate)
        tried.append((rate, ok))
        return ok

    good: float | None = None
    bad: float | None = None
    rate = start
    while len(tried) < max_points:
        if await check(rate):
            good = rate
            if rate >= max_rate:
                break
            rate = min(rate * 2, max_rate)
        else:
            bad = rate
            break
    while good is None and bad is not None and len(tried) < max_points and bad > start / 64:
        rate = bad / 2
        if await check(rate):
            good = rate
        else:
            bad = rate
    while good is not None and bad is not None and (bad - good) / good > precision and len(tried) < max_points:
        rate = (good + bad) / 2
        if await check(rate):
            good = rate
        else:
            bad = rate
    return {"highest_meeting": good, "lowest_failing": bad, "tried": [{"rate": r, "meets": ok} for r, ok in tried],
            "converged": good is not None and (bad is None or (bad - good) / good <= precision)}


def saturation(search: dict, points: dict[float, dict]) -> dict:
    """What the search found, from its points by rate (sweep entries with "verdict" and "summary"): the
    saturation rate, the rate the server completed there, and which criterion bounded it (the failing point
    just above: the SLO, the server falling behind, or both; --max-qps when none failed)."""
    best, bad = search["highest_meeting"], search["lowest_failing"]
    bound = points[bad]["verdict"] if bad is not None else None
    return {
        "saturation_rate": best,
        "achieved_rate": (points[best]["summary"].get("pace") or {}).get("achieved_per_s") if best is not None else None,
        "bounded_by": bound["failed"] if bound is not None else ["max_qps"],
        "bound_at": bad,
        "bound_reasons": bound["reasons"] if bound is not None else [],
    }


def saturation_text(result: dict, slo: str, fraction: float, tolerance: float) -> str:
    best, bad = result["saturation_rate"], result["bound_at"]
    criteria = f"{fraction:.0%} of requests met {slo} and the server kept up (within {tolerance:.0%})"
    if best is None:
        head = f"saturation point: none; no rate tried had {criteria}"
    else:
        got = result["achieved_rate"]
        head = (f"saturation point: {best:.3g} req/s offered ({'-' if got is None else f'{got:.3g}'} req/s completed) "
                f"is the highest rate where {criteria}")
    if bad is None:
        return head + "\nbounded by: --max-qps (every rate tried met the SLO)"
    return head + f"\nbounded by: at {bad:.3g} req/s " + "; ".join(result["bound_reasons"])


def _ms(d: dict, key: str) -> str:
    v = d.get(key)
    return "-" if v is None else f"{v:,.1f}"


SWEEP_HEADERS = ["load", "req/s", "out tok/s", "TTFT p50 (ms)", "TTFT p99 (ms)", "TPOT p50 (ms)", "TPOT p99 (ms)",
                 "E2EL p50 (ms)", "SLO met", "kept up", "ok"]


def _kept_up_cell(v: Verdict, p: dict | None) -> str:
    """yes/no with the completion rate's difference from the arrival rate while requests arrived."""
    if v.kept_up is None:
        return "too short" if "too short" in v.failed else "-"
    return f"{'yes' if v.kept_up else 'no'} ({p['achieved_per_s'] / p['offered_per_s'] - 1:+.0%})"


def sweep_rows(points: list[dict], slo_fraction: float, tolerance: float) -> list[list]:
    rows = []
    for p in points:
        s = p["summary"]
        t = s["throughput"]
        g = s.get("goodput") or {}
        v = judge(s, slo_fraction, tolerance)
        rows.append([
            p["label"],
            "-" if t["requests_per_s"] is None else f"{t['requests_per_s']:.2f}",
            "-" if t["output_tokens_per_s"] is None else f"{t['output_tokens_per_s']:,.0f}",
            _ms(s["ttft_ms"], "p50"), _ms(s["ttft_ms"], "p99"),
            _ms(s["tpot_ms"], "p50"), _ms(s["tpot_ms"], "p99"),
            _ms(s["e2el_ms"], "p50"),
            "-" if g.get("fraction") is None else f"{g['fraction']:.0%}",
            _kept_up_cell(v, s.get("pace")),
            s["requests"]["completed"],
        ])
    return rows


def point_order(point: dict) -> tuple:
    """Open-loop points by rate, then closed-loop points by users (a sweep may hold both)."""
    return (point.get("qps") is None, point.get("qps") or 0, point.get("concurrency") or 0)


def sweep_table(points: list[dict], simulated: bool, slo_fraction: float, tolerance: float) -> str:
    """The table, then one line per point that fails, saying why."""
    head = "SIMULATED: timings come from dissect's engine model, not from a real GPU.\n" if simulated else ""
    text = head + tabulate(sweep_rows(points, slo_fraction, tolerance), headers=SWEEP_HEADERS, tablefmt="simple",
                           disable_numparse=True)
    fails = [(p["label"], v) for p in points if not (v := judge(p["summary"], slo_fraction, tolerance)).meets]
    if fails:
        text += "\n\n" + "\n".join(f"{label} fails: {'; '.join(v.reasons)}" for label, v in fails)
    return text
