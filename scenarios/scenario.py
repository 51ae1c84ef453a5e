"""Scenario files: a named, versioned workload (model, lengths or dataset, arrival, load points, SLOs).

This loader reads the YAML and checks its structure and types against a schema it is given (field -> type or
types; a section -> a dict of its own fields), naming the field at fault. The schema of a run's fields comes from
loadgen's RunConfig (`loadgen.config.scenario_schema`), which also checks the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scenarios.catalog import CatalogError

SCENARIO_DIR = Path(__file__).parent
DATA_DIR = SCENARIO_DIR / "data"

# The fields every scenario file has; what else it may hold (and each field's type) is the run configuration's to
# say: loadgen derives that schema from its RunConfig and passes it to load_scenario.
HEADER: dict[str, Any] = {"name": str, "version": int, "description": str}
REQUIRED = tuple(HEADER)


@dataclass(frozen=True)
class Scenario:
    path: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def description(self) -> str:
        return self.data["description"]

    def section(self, key: str) -> dict[str, Any]:
        return dict(self.data.get(key) or {})

    def resolve_path(self, relative: str) -> Path:
        """Dataset paths are relative to the scenario file; bare names also find the shipped samples."""
        p = Path(relative)
        if p.is_absolute():
            return p
        beside = self.path.parent / p
        return beside if beside.exists() else DATA_DIR / p


def find_data_file(name: str) -> Path:
    """A dataset path as given, or else a shipped sample of that name in scenarios/data/."""
    p = Path(name)
    if p.exists() or p.is_absolute():
        return p
    return DATA_DIR / p if (DATA_DIR / p).exists() else p


def _type_name(t: Any) -> str:
    names = [x.__name__ for x in (t if isinstance(t, tuple) else (t,))]
    return " or ".join({"str": "text", "int": "integer", "float": "number", "bool": "true/false",
                        "list": "list"}.get(n, n) for n in names)


def _validate(where: str, data: Any, schema: dict[str, Any], prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: {prefix.rstrip('.') or 'the file'} must be a mapping of fields")
    for key, value in data.items():
        field = f"{prefix}{key}"
        if key not in schema:
            raise CatalogError(f"{where}: unknown field '{field}'; known: {', '.join(prefix + k for k in schema)}")
        expected = schema[key]
        if isinstance(expected, dict):
            _validate(where, value, expected, field + ".")
            continue
        wrong_bool = isinstance(value, bool) and expected is not bool and bool not in (
            expected if isinstance(expected, tuple) else (expected,))
        if not isinstance(value, expected) or wrong_bool:
            raise CatalogError(f"{where}: field '{field}' must be {_type_name(expected)}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise CatalogError(f"{where}: field '{field}' must not be negative, got {value!r}")


def load_scenario(name_or_path: str, schema: dict[str, Any] | None = None) -> Scenario:
    """The scenario of that name (or file), checked against HEADER plus `schema`."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") or p.exists()):
        p = SCENARIO_DIR / f"{name_or_path}.yaml"
        if not p.exists():
            raise CatalogError(f"unknown scenario {name_or_path!r}; `loadgen scenarios` lists them, or give a file path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"cannot read scenario {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise CatalogError(f"{p}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    _validate(str(p), data, {**HEADER, **(schema or {})})
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CatalogError(f"{p}: missing field(s) {', '.join(missing)}")
    return Scenario(p, data)


def scenario_files() -> list[Path]:
    """The shipped scenario files, by name."""
    return sorted(SCENARIO_DIR.glob("*.yaml"))
