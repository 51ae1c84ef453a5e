"""How one option's value is read, from a flag's text or a scenario file's YAML value, into its typed value.

A kind is the only parser of its values: flags, scenario files, sweep points and Locust's options all go through
it, and a value that is already typed passes through unchanged (so a config built in Python is checked the same
way). Each kind also says which YAML types a scenario file may use for it and how to write a value back as text
a flag accepts (for passing a config to Locust's processes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from loadgen.errors import LoadgenError
from loadgen.slo import parse_slo
from loadgen.units import parse_duration
from loadgen.workload.distributions import LengthDistribution

_NUM = (int, float)


class ConfigError(LoadgenError):
    """A bad option value or combination; `field` is the dataclass field at fault, when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Kind:
    read: Callable[[Any, str], Any]  # (raw or typed value, the flag that names it) -> typed value
    yaml_types: tuple[type, ...]
    show: Callable[[Any], str] = str


def _number(cast: type, low: float, inclusive: bool, what: str) -> Callable[[Any, str], Any]:
    def read(raw: Any, flag: str) -> Any:
        if isinstance(raw, bool):
            raise LoadgenError(f"{flag}: {raw!r} is not a valid {what}")
        try:
            value = cast(raw)
        except (TypeError, ValueError):
            raise LoadgenError(f"{flag}: {raw!r} is not a valid {what}") from None
        if value != value or value < low or (not inclusive and value == low):
            raise LoadgenError(f"{flag}: {raw!r} must be {'>=' if inclusive else '>'} {low:g}")
        if not math.isfinite(value):  # --qps inf would send everything at once, not at a rate
            raise LoadgenError(f"{flag}: {raw!r} must be a finite {what}")
        return value

    return read


def _integer(raw: Any, flag: str) -> int:
    if isinstance(raw, bool):
        raise LoadgenError(f"{flag}: {raw!r} is not a valid integer")
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise LoadgenError(f"{flag}: {raw!r} is not a valid integer") from None


def _port(raw: Any, flag: str) -> int:
    value = _number(int, 0, False, "port")(raw, flag)
    if value > 65535:
        raise LoadgenError(f"{flag}: {raw!r} is not a TCP port: give 1-65535")
    return value


def _fraction(raw: Any, flag: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise LoadgenError(f"{flag}: {raw!r} is not a number") from None
    if not 0 <= value <= 1:  # also refuses nan
        raise LoadgenError(f"{flag}: {raw!r} must be between 0 and 1")
    return value


def _duration(raw: Any, flag: str) -> float:
    if isinstance(raw, _NUM) and not isinstance(raw, bool):
        value = float(raw)  # seconds already (a YAML number, or a typed config)
    else:
        try:
            value = parse_duration(str(raw))
        except LoadgenError as exc:
            raise LoadgenError(f"{flag}: {exc}") from None
    if not value > 0 or not math.isfinite(value):
        raise LoadgenError(f"{flag}: {raw!r} must be a positive duration")
    return value


def _text(raw: Any, flag: str) -> str:
    if not isinstance(raw, str):
        raise LoadgenError(f"{flag}: {raw!r} must be text")
    return raw


def _switch(raw: Any, flag: str) -> bool:
    if not isinstance(raw, bool):
        raise LoadgenError(f"{flag}: {raw!r} must be true or false")
    return raw


MAX_TOKENS = 1 << 24  # more than any model's context: a bigger count is a typo (1e99), not a workload


def _distribution(raw: Any, flag: str) -> LengthDistribution:
    if isinstance(raw, LengthDistribution):
        return raw
    dist = LengthDistribution.parse(str(raw), flag)
    counts = (dist.a,) if dist.kind == "fixed" else (dist.a, dist.b) if dist.kind == "uniform" else ()
    if any(c != int(c) for c in counts):
        raise LoadgenError(f"{flag}: {raw!r}: token counts are whole numbers, e.g. {int(counts[0])} or "
                           f"uniform:{int(dist.a)},{int(dist.b) or int(dist.a)}")
    if max(dist.a, dist.b) > MAX_TOKENS:
        raise LoadgenError(f"{flag}: {raw!r} is more tokens than any model's context ({MAX_TOKENS}); give a "
                           "count like 512")
    return dist


class Slo(dict):
    """Metric -> limit in milliseconds, remembering the text it was read from (tables and run.json quote what
    the user wrote: ttft:1s, not ttft:1000.0ms)."""

    def __init__(self, limits_ms: dict[str, float], text: str) -> None:
        super().__init__(limits_ms)
        self.text = text


def _slo(raw: Any, flag: str) -> Slo:
    if isinstance(raw, Slo):
        return raw
    text = show_slo(raw) if isinstance(raw, dict) else str(raw).strip()
    return Slo(parse_slo(text), text)  # a typed dict is checked by the same parser: no second set of rules


def show_slo(limits_ms: dict[str, float]) -> str:
    """The text --slo reads back to exactly these limits (repr keeps every digit of a float)."""
    if isinstance(limits_ms, Slo):
        return limits_ms.text
    return ",".join(f"{name}:{limit!r}ms" for name, limit in limits_ms.items())


def _show_seconds(value: float) -> str:
    return f"{value!r}s"


def _workers(raw: Any, flag: str) -> int | str:
    if str(raw).strip().lower() == "auto":
        return "auto"
    try:
        return positive_int.read(raw, flag)
    except LoadgenError:
        raise LoadgenError(f"{flag}: {raw!r} is not a number of workers: give a positive integer or auto") from None


def choice(values: tuple[str, ...]) -> Kind:
    def read(raw: Any, flag: str) -> str:
        if raw not in values:
            raise LoadgenError(f"{flag}: invalid choice: {raw!r} (choose from {', '.join(values)})")
        return raw

    return Kind(read, (str,))


def repeated(item: Kind) -> Kind:
    """A flag given several times (--engine-arg A --engine-arg B): a tuple of items."""

    def read(raw: Any, flag: str) -> tuple:
        values = [raw] if isinstance(raw, str) else list(raw)
        return tuple(item.read(v, flag) for v in values)

    return Kind(read, (list,))


def number_list(item: Kind) -> Kind:
    """Comma-separated points (--qps 1,2,4,8) or a YAML list of numbers."""

    def read(raw: Any, flag: str) -> tuple:
        if isinstance(raw, (list, tuple)):
            values = list(raw)
        else:
            values = [x.strip() for x in str(raw).split(",") if x.strip()]
        if not values:
            raise LoadgenError(f"{flag}: give a comma-separated list, e.g. 1,2,4,8")
        return tuple(item.read(v, flag) for v in values)

    return Kind(read, (list,), lambda v: ",".join(item.show(x) for x in v))


positive_float = Kind(_number(float, 0, False, "number"), _NUM, repr)
positive_int = Kind(_number(int, 0, False, "integer"), (int,))
nonneg_int = Kind(_number(int, 0, True, "integer"), (int,))
integer = Kind(_integer, (int,))
fraction = Kind(_fraction, _NUM, repr)
port = Kind(_port, (int,))
duration = Kind(_duration, (str, *_NUM), _show_seconds)
text = Kind(_text, (str,))
switch = Kind(_switch, (bool,))
distribution = Kind(_distribution, (str, int))
slo = Kind(_slo, (str,), show_slo)
workers = Kind(_workers, (str, int))
