"""Service-level objectives for goodput, parsed from 'ttft:500ms,tpot:50ms,e2el:10s'."""

from __future__ import annotations

from loadgen.errors import LoadgenError
from loadgen.units import parse_duration

SLO_METRICS = ("ttft", "tpot", "itl", "e2el")


def parse_slo(text: str) -> dict[str, float]:
    """Metric name -> limit in milliseconds."""
    slos: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        name, sep, value = part.partition(":")
        name = name.strip().lower()
        if not sep or name not in SLO_METRICS:
            raise LoadgenError(
                f"bad SLO {part!r}: write METRIC:LIMIT with METRIC one of {', '.join(SLO_METRICS)}, e.g. ttft:500ms"
            )
        # a latency limit with no unit is ambiguous (ttft:500 read as seconds passed everything): a unit is required
        limit = parse_duration(value, what=f"SLO limit {part!r}", require_unit=True) * 1e3
        if limit <= 0:
            raise LoadgenError(f"bad SLO {part!r}: the limit must be positive")
        if name in slos:
            raise LoadgenError(f"bad SLO {text!r}: {name} is given twice; give each metric once")
        slos[name] = limit
    if not slos:
        raise LoadgenError("empty --slo: give e.g. ttft:500ms,tpot:50ms")
    return slos
