"""Metrics exactly as shared/DESIGN.md defines them: pure functions from RequestRecords to a summary.

Times are from the client's monotonic clock. TTFT = first token-bearing chunk - sent. ITL = gaps between
consecutive token-bearing chunks. TPOT = (finished - first token) / (output tokens - 1) for >= 2 tokens.
E2EL = finished - sent. Throughput over the measured window (first measured send -> last measured finish).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from loadgen.pace import kept_up, pace
from loadgen.records import CANCELLED, TIMEOUT, RequestRecord

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}
# Lateness p99 above this means the client itself could not keep to its schedule.
LATENESS_WARN_MS = 5.0


def ttft_ms(r: RequestRecord) -> float | None:
    return None if r.first_token_s is None else (r.first_token_s - r.sent_s) * 1e3


def e2el_ms(r: RequestRecord) -> float:
    return (r.finished_s - r.sent_s) * 1e3


def tpot_ms(r: RequestRecord) -> float | None:
    if r.first_token_s is None or r.output_tokens < 2:
        return None
    return (r.finished_s - r.first_token_s) * 1e3 / (r.output_tokens - 1)


def itl_ms(r: RequestRecord) -> list[float]:
    t = r.token_times_ms
    return [b - a for a, b in zip(t, t[1:])]


def lateness_ms(r: RequestRecord) -> float | None:
    return None if r.scheduled_s is None else (r.sent_s - r.scheduled_s) * 1e3


def distribution(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """count, mean, std (population), min, p50..p999 (linear interpolation), max; None when empty."""
    arr = np.asarray(values, dtype=float)
    keys = ["mean", "std", "min", *PERCENTILES, "max"]
    if arr.size == 0:
        return {"count": 0, **{k: None for k in keys}}
    pct = np.percentile(arr, list(PERCENTILES.values()))
    out: dict[str, float | int | None] = {
        "count": int(arr.size),
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "min": float(arr.min()),
    }
    out.update({k: float(v) for k, v in zip(PERCENTILES, pct)})
    out["max"] = float(arr.max())
    return out


def meets_slo(r: RequestRecord, slo: dict[str, float]) -> bool:
    """A completed request meets the SLO when every given limit holds. Limits on TPOT/ITL do not apply to
    requests that produced a single token (no decode step); a failed request never meets the SLO."""
    if not r.ok:
        return False
    checks = {
        "ttft": lambda: ttft_ms(r),
        "e2el": lambda: e2el_ms(r),
        "tpot": lambda: tpot_ms(r),
        "itl": lambda: max(itl_ms(r), default=None),
    }
    for name, limit in slo.items():
        value = checks[name]()
        if value is not None and value > limit:
            return False
        if value is None and name == "ttft":
            return False
    return True


def request_counts(records: Sequence[RequestRecord]) -> dict:
    errors: dict[str, int] = {}
    for r in records:
        if r.status.startswith("error"):
            errors[r.status] = errors.get(r.status, 0) + 1
    return {
        "total": len(records),
        "completed": sum(r.ok for r in records),
        "failed": sum(errors.values()),
        "timed_out": sum(r.status == TIMEOUT for r in records),
        "cancelled": sum(r.status == CANCELLED for r in records),
        "errors_by_kind": dict(sorted(errors.items())),
    }


def summarize(
    records: Iterable[RequestRecord],
    slo: dict[str, float] | None = None,
    simulated: bool = False,
) -> dict:
    """The summary.json body (without run-level extras such as timing error against ground truth)."""
    every = list(records)
    measured = [r for r in every if r.phase == "measured"]
    ok = [r for r in measured if r.ok]
    counts = request_counts(measured)
    counts["warmup"] = len(every) - len(measured)

    window = 0.0
    if measured:
        window = max(r.finished_s for r in measured) - min(r.sent_s for r in measured)
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.input_tokens for r in ok)

    def per_s(x: float) -> float | None:
        return x / window if window > 0 else None

    summary: dict = {
        "simulated": simulated,
        "requests": counts,
        "window_s": window,
        "throughput": {
            "requests_per_s": per_s(len(ok)),
            "output_tokens_per_s": per_s(out_tokens),
            "total_tokens_per_s": per_s(out_tokens + in_tokens),
        },
        "tokens": {
            "input_total": in_tokens,
            "output_total": out_tokens,
            "output_per_request": distribution([r.output_tokens for r in ok]),
            "output_source": _sources(r.output_tokens_source for r in ok),
            "input_source": _sources(r.input_tokens_source for r in ok),
            "input_counted": input_counted(ok),
        },
        "ttft_ms": distribution([v for r in ok if (v := ttft_ms(r)) is not None]),
        "tpot_ms": distribution([v for r in ok if (v := tpot_ms(r)) is not None]),
        "itl_ms": distribution([g for r in ok for g in itl_ms(r)]),
        "e2el_ms": distribution([e2el_ms(r) for r in ok]),
    }
    late = [v for r in measured if (v := lateness_ms(r)) is not None]
    if late:
        arr = np.asarray(late)
        summary["lateness_ms"] = {
            "p50": float(np.percentile(arr, 50)),
            "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max()),
        }
    else:
        summary["lateness_ms"] = None  # closed loop: no schedule to be late against
    summary["pace"] = pace(every)
    if slo:
        good = sum(meets_slo(r, slo) for r in measured)
        summary["goodput"] = {
            "slo_ms": dict(slo),
            "requests_per_s": per_s(good),
            "fraction": good / len(measured) if measured else None,
            "good_requests": good,
        }
    summary["warnings"] = warnings_for(summary)
    return summary


# A chat template adds a few dozen tokens to every prompt; a prompt sized with another tokenizer is off by a share.
INPUT_MISMATCH_WARN = 0.10  # of the prompt tokens asked for
INPUT_MISMATCH_MIN_TOKENS = 32  # per request


def input_counted(ok: list[RequestRecord]) -> dict | None:
    """The prompt tokens the server itself counted against those asked for, over the requests whose server
    reported a count: prompts sized with the wrong tokenizer (or none) make every latency describe another
    workload, and only the server's count shows it."""
    counted = [r for r in ok if r.input_tokens_source == "usage" and r.target_input_tokens]
    if not counted:
        return None
    server = sum(r.input_tokens for r in counted)
    target = sum(r.target_input_tokens for r in counted)
    return {"requests": len(counted), "server_total": server, "target_total": target,
            "ratio": server / target}


CLIENT_CPU_WARN = 0.9  # of one core: an asyncio client past this is saturated and its timestamps lag


def client_cpu_warning(cpu_s: float, wall_s: float) -> str | None:
    """The other sign (beside lateness) that the load generator, not the server, was the bottleneck."""
    if wall_s <= 0 or cpu_s / wall_s <= CLIENT_CPU_WARN:
        return None
    return (f"client used {cpu_s / wall_s:.0%} of a CPU core during the run: it was probably the bottleneck and "
            "its latencies include its own queueing (lower the load, or add client processes with --workers)")


def warnings_for(summary: dict) -> list[str]:
    out = []
    late = summary.get("lateness_ms")
    if late and late["p99"] > LATENESS_WARN_MS:
        out.append(
            f"client fell behind its schedule: lateness p99 {late['p99']:.1f} ms > {LATENESS_WARN_MS:g} ms; "
            "latencies include the client's own queueing (lower the load or use more client cores)"
        )
    ok, why = kept_up(summary.get("pace"))
    if ok is False:
        out.append(f"{why}; its latencies describe a growing queue, not a steady state (lower the load)")
    counted = summary["tokens"].get("input_counted")
    if counted and abs(counted["ratio"] - 1) > INPUT_MISMATCH_WARN and \
            abs(counted["server_total"] - counted["target_total"]) > INPUT_MISMATCH_MIN_TOKENS * counted["requests"]:
        out.append(
            f"the server counted {counted['ratio']:.2f}x the prompt tokens asked for "
            f"({counted['server_total'] / counted['requests']:.0f} vs {counted['target_total'] / counted['requests']:.0f} "
            "per request): prompts were sized with another tokenizer; give --tokenizer the served model's tokenizer"
        )
    req = summary["requests"]
    if req["total"] and req["completed"] < req["total"]:
        out.append(f"{req['total'] - req['completed']} of {req['total']} measured requests did not complete")
    return out


def _sources(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
