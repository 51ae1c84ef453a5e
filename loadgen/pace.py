"""Did the server keep up with an open-loop load, and does a load point meet an SLO?

A point can meet a latency SLO while the server falls behind, when the run ends before the queue has grown:
100 requests at 1,024 req/s all fit in a 256-sequence batch at once and every one of them starts within a
second. So a point meets an SLO only when the server also kept up: while the requests arrived, it completed
them (nearly) as fast as they came, and the requests in flight did not pile up.

`pace` measures that from the records (a pure function, stored in summary.json as "pace"); `kept_up` and
`judge` give the verdict for a stated tolerance. Both rates are least-squares slopes of cumulative counts over
the same stretch of time, so the bursts of Poisson arrivals and the waves of a batching engine average out,
and the shortfall is the queue's growth rate (arrivals = completions + growth of what is in flight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from loadgen.records import RequestRecord

# A point keeps up while it completes at least (1 - tolerance) of the rate at which its requests arrive.
RATE_TOLERANCE = 0.05
# A queue growth within this many standard deviations of the in-flight count's own Poisson-like spread
# (sqrt of its mean) is not evidence of falling behind: at 1 req/s a few requests either way are chance.
NOISE_SIGMAS = 3.0
# The fit starts when the first measured request finishes (before that nothing measured can have completed and
# the queue is still filling) and needs arrivals for at least twice that long again to show a trend.
MIN_FIT_LATENCIES = 2.0
_GRID = 1024  # samples of the cumulative counts over the fitted stretch


def pace(records: Iterable[RequestRecord]) -> dict | None:
    """Arrival and completion rates while the measured requests arrived; None for a closed loop, which
    sends only when a user's last request finished and so cannot outrun the server.

    The fitted stretch runs from the first measured request's finish to the last measured send: warm-up
    requests still in flight count in the queue, and completions of any phase count as completions (the server
    did that work while the load was on)."""
    every = list(records)
    measured = [r for r in every if r.phase == "measured"]
    if not measured or any(r.scheduled_s is None for r in measured):
        return None
    sends = np.sort([r.sent_s for r in measured])
    first, last = float(sends[0]), float(sends[-1])
    finishes = [r.finished_s for r in measured if r.ok]
    fit_from = min(finishes) if finishes else None
    out: dict = {
        "requests": len(measured),
        "arrival_window_s": last - first,
        "first_latency_s": None if fit_from is None else fit_from - first,  # first send -> first finish
        "fit_from_s": fit_from,
        "fit_to_s": last,
        "offered_per_s": None,
        "achieved_per_s": None,
        "in_flight_start": None,
        "in_flight_end": None,
        "in_flight_mean": None,
    }
    if fit_from is None or last - fit_from <= 0:
        return out
    t = np.linspace(fit_from, last, _GRID)
    done_ok = np.sort([r.finished_s for r in every if r.ok])
    all_sent = np.sort([r.sent_s for r in every])
    all_done = np.sort([r.finished_s for r in every])
    queue = (np.searchsorted(all_sent, t, side="right") - np.searchsorted(all_done, t, side="right")).astype(float)
    tenth = _GRID // 10
    out.update(
        offered_per_s=float(np.polyfit(t, np.searchsorted(sends, t, side="right"), 1)[0]),
        achieved_per_s=float(np.polyfit(t, np.searchsorted(done_ok, t, side="right"), 1)[0]),
        in_flight_start=float(queue[:tenth].mean()),
        in_flight_end=float(queue[-tenth:].mean()),
        in_flight_mean=float(queue.mean()),
    )
    return out


def too_short(p: dict) -> bool:
    """Arrivals that stopped before a trend could show: less than twice the first request's latency after it
    finished (the batch may still have been absorbing the load)."""
    if p["offered_per_s"] is None:
        return True
    return p["fit_to_s"] - p["fit_from_s"] < MIN_FIT_LATENCIES * p["first_latency_s"]


def kept_up(p: dict | None, tolerance: float = RATE_TOLERANCE) -> tuple[bool | None, str]:
    """(verdict, why). None with an empty reason for a closed loop (not applicable). A shortfall beyond the
    tolerance and beyond the in-flight count's noise is falling behind however short the run; without one, a
    run too short for a trend to show is None with a reason, not a pass."""
    if p is None:
        return None, ""
    if p["offered_per_s"] is not None:
        offered, achieved = p["offered_per_s"], p["achieved_per_s"]
        shortfall = 1 - achieved / offered if offered > 0 else 0.0
        growth = (offered - achieved) * (p["fit_to_s"] - p["fit_from_s"])
        noise = NOISE_SIGMAS * math.sqrt(max(p["in_flight_mean"], 1.0))
        facts = (f"completed {achieved:.3g} req/s while {offered:.3g} req/s arrived ({-shortfall:+.1%}); "
                 f"in flight {p['in_flight_start']:.0f} -> {p['in_flight_end']:.0f}")
        if shortfall > tolerance and growth > noise:
            return False, f"the server fell behind: {facts} (tolerance {tolerance:.0%})"
    if too_short(p):
        first = ("none completed" if p["first_latency_s"] is None
                 else f"the first finished {p['first_latency_s']:.2f} s after the first send")
        return None, (f"too short to tell whether the server kept up: its {p['requests']} requests arrived within "
                      f"{p['arrival_window_s']:.2f} s and {first}; size the point by time (drop --num-requests) "
                      "or send more requests")
    return True, f"the server kept up: {facts}"


def slo_text(slo_ms: dict[str, float]) -> str:
    def limit(ms: float) -> str:
        return f"{ms / 1e3:g}s" if ms >= 1000 else f"{ms:g}ms"

    return ",".join(f"{k}:{limit(v)}" for k, v in slo_ms.items())


@dataclass(frozen=True)
class Verdict:
    """Whether a load point meets an SLO: the SLO fraction and keeping up, with the reasons it fails."""

    meets: bool
    slo_met: bool | None  # None: no SLO given
    kept_up: bool | None  # None: closed loop, not recorded, or too short to tell
    reasons: tuple[str, ...] = field(default=())  # why it fails; empty when it meets
    pace_note: str = ""  # the keeping-up facts, also when it meets

    @property
    def failed(self) -> list[str]:
        """The criteria this point failed: 'slo', 'fell behind', 'too short'."""
        out = []
        if self.slo_met is False:
            out.append("slo")
        if self.kept_up is False:
            out.append("fell behind")
        elif self.kept_up is None and self.pace_note.startswith("too short"):
            out.append("too short")
        return out

    def to_json(self) -> dict:
        return {"meets": self.meets, "slo_met": self.slo_met, "kept_up": self.kept_up, "failed": self.failed,
                "reasons": list(self.reasons), "pace": self.pace_note}


def judge(summary: dict, slo_fraction: float, tolerance: float = RATE_TOLERANCE) -> Verdict:
    """A point meets its SLO when at least `slo_fraction` of its measured requests met every limit and the
    server kept up within `tolerance`. A summary written before "pace" was recorded is judged on the SLO alone;
    an open-loop point too short to show a trend fails, since it cannot show that the server kept up."""
    reasons = []
    g = summary.get("goodput")
    slo_met = None
    if g is not None:
        frac = g.get("fraction")
        slo_met = frac is not None and frac >= slo_fraction
        if not slo_met:
            got = "no measured request" if frac is None else f"only {frac:.0%} of requests"
            reasons.append(f"{got} met {slo_text(g['slo_ms'])} (needs {slo_fraction:.0%})")
    ok, note = kept_up(summary.get("pace"), tolerance) if "pace" in summary else (None, "")
    cannot_tell = ok is None and bool(note)
    if ok is False or cannot_tell:
        reasons.append(note)
    meets = slo_met is not False and ok is not False and not cannot_tell
    return Verdict(meets, slo_met, ok, tuple(reasons), note)
