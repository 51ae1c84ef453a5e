"""Parsing of human-friendly quantities: durations such as 500ms, 10s, 2m."""

from __future__ import annotations

import re

from loadgen.errors import LoadgenError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m|h)?\s*$")
_SCALE = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, what: str = "duration", require_unit: bool = False) -> float:
    """Seconds from '250ms', '10s', '2m', '1h' or (unless require_unit) a bare number of seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise LoadgenError(f"bad {what} {text!r}: use a number with a unit, e.g. 500ms, 10s or 2m")
    if require_unit and match.group(2) is None:
        number = match.group(1)
        raise LoadgenError(f"{what} has no unit: write {number}ms or {number}s")
    return float(match.group(1)) * _SCALE[match.group(2)]
