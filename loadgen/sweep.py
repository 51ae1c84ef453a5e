"""Sweeps: one load point after another against one server, and the search for the saturation point."""

from __future__ import annotations

from typing import Awaitable, Callable

from tabulate import tabulate


def meets(summary: dict, fraction: float) -> bool:
    """A load point meets the SLO when at least `fraction` of its measured requests met every limit."""
    g = summary.get("goodput") or {}
    return g.get("fraction") is not None and g["fraction"] >= fraction


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


def _ms(d: dict, key: str) -> str:
    v = d.get(key)
    return "-" if v is None else f"{v:,.1f}"


def sweep_rows(points: list[dict]) -> list[list]:
    rows = []
    for p in points:
        s = p["summary"]
        t = s["throughput"]
        g = s.get("goodput") or {}
        rows.append([
            p["label"],
            "-" if t["requests_per_s"] is None else f"{t['requests_per_s']:.2f}",
            "-" if t["output_tokens_per_s"] is None else f"{t['output_tokens_per_s']:,.0f}",
            _ms(s["ttft_ms"], "p50"), _ms(s["ttft_ms"], "p99"),
            _ms(s["tpot_ms"], "p50"), _ms(s["tpot_ms"], "p99"),
            _ms(s["e2el_ms"], "p50"),
            "-" if g.get("fraction") is None else f"{g['fraction']:.0%}",
            s["requests"]["completed"],
        ])
    return rows


def sweep_table(points: list[dict], simulated: bool) -> str:
    head = "SIMULATED: timings come from dissect's engine model, not from a real GPU.\n" if simulated else ""
    return head + tabulate(sweep_rows(points), headers=["load", "req/s", "out tok/s", "TTFT p50 (ms)",
                                                        "TTFT p99 (ms)", "TPOT p50 (ms)", "TPOT p99 (ms)",
                                                        "E2EL p50 (ms)", "SLO met", "ok"],
                           tablefmt="simple", disable_numparse=True)
