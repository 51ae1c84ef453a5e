"""One option, declared once: a dataclass field whose metadata carries its kind, its help text (the field's
documentation), its flag and where a scenario file keeps it. Sections are frozen dataclasses of such fields;
constructing one reads and checks every value through its kind, then the section's own cross-field rules."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

from loadgen.config.kinds import ConfigError, Kind
from loadgen.errors import LoadgenError


@dataclass(frozen=True)
class Option:
    kind: Kind
    help: str
    flag: str | None = None  # default: --field-name
    scenario: str | None = None  # the scenario file's key, e.g. "workload.input_len"; None: flags only
    choices: tuple[str, ...] | None = None  # shown by argparse, and checked by the kind
    action: str | None = None  # "switch" (a flag without a value), "append" (repeatable)
    const: Any = True  # the value a switch flag sets
    metavar: str | None = None


def option(default: Any, kind: Kind, help: str, **spec: Any) -> Any:
    """A section field: `default` when neither a flag nor a scenario sets it."""
    show = spec.pop("repr", True)  # False for secrets: kept out of repr() and so out of logs and tracebacks
    return dataclasses.field(default=default, repr=show, metadata={"option": Option(kind, help, **spec)})


def options(section: type | object) -> Iterator[tuple[str, Option]]:
    for f in dataclasses.fields(section):
        spec = f.metadata.get("option")
        if spec is not None:
            yield f.name, spec


def flag_of(name: str, spec: Option) -> str:
    return spec.flag or "--" + name.replace("_", "-")


class Section:
    """Base of every config section: values are read by their kinds once, at construction."""

    def __post_init__(self) -> None:
        for name, spec in options(self):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                object.__setattr__(self, name, spec.kind.read(value, flag_of(name, spec)))
            except ConfigError:
                raise
            except LoadgenError as exc:
                raise ConfigError(str(exc), field=name) from None
        self.check()

    def check(self) -> None:
        """Rules that involve several fields of this section."""

    def to_text(self) -> dict[str, str | bool | tuple]:
        """Each set value as its flag would give it (switches as booleans, repeated flags as tuples)."""
        out: dict[str, str | bool | tuple] = {}
        for name, spec in options(self):
            value = getattr(self, name)
            if value is None:
                continue
            if spec.action == "switch" or spec.action == "append":
                out[name] = value
            else:
                out[name] = spec.kind.show(value)
        return out
