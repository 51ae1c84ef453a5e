"""Scenario files as run configurations: their schema is derived from the config sections' fields (each field's
`scenario` key and its kind's YAML types), and their values are read by the same kinds as flags, so a scenario
file cannot accept what a flag refuses, nor the other way round."""

from __future__ import annotations

from typing import Any

from loadgen.config.commands import SweepConfig
from loadgen.config.fields import Option, flag_of, options
from loadgen.config.run import RUN_SECTIONS, TRACE
from loadgen.errors import LoadgenError
from loadgen.load.arrivals import ARRIVAL_KINDS
from scenarios.catalog import CatalogError
from scenarios.scenario import Scenario, scenario_files
from scenarios.scenario import load_scenario as _load_file

CLOSED = "closed"
# arrival.kind names the load mode, which flags give by --qps, --concurrency or --arrival: a file's own key
SCENARIO_ARRIVAL_KINDS = (*ARRIVAL_KINDS, TRACE, CLOSED)
SCENARIO_SECTIONS = {**RUN_SECTIONS, "sweep": SweepConfig}


class ScenarioError(CatalogError, LoadgenError):
    """A scenario file's value that its field's kind refuses (a catalog error, as a malformed file is)."""


def scenario_fields() -> dict[str, tuple[str, str, Option]]:
    """Scenario key ("workload.input_len") -> (section name, field name, its option)."""
    out: dict[str, tuple[str, str, Option]] = {}
    for section_name, section in SCENARIO_SECTIONS.items():
        for name, spec in options(section):
            if spec.scenario:
                out[spec.scenario] = (section_name, name, spec)
    return out


def scenario_schema() -> dict[str, Any]:
    """The nested field -> YAML types mapping scenarios.load_scenario checks a file against."""
    schema: dict[str, Any] = {}
    for key, (_, _, spec) in scenario_fields().items():
        node = schema
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = spec.kind.yaml_types
    schema["arrival"]["kind"] = (str,)
    return schema


def value_at(scenario: Scenario, key: str) -> Any:
    node: Any = scenario.data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def load_scenario(name_or_path: str) -> Scenario:
    """A scenario by name or path, its structure, types and values checked; one line names a bad field."""
    scenario = _load_file(name_or_path, scenario_schema())
    where = str(scenario.path)
    kind = value_at(scenario, "arrival.kind")
    if kind is not None and kind not in SCENARIO_ARRIVAL_KINDS:
        raise ScenarioError(f"{where}: field 'arrival.kind' must be one of {', '.join(SCENARIO_ARRIVAL_KINDS)}, "
                            f"got {kind!r}")
    for key, (_, name, spec) in scenario_fields().items():
        value = value_at(scenario, key)
        if value is None:
            continue
        try:
            spec.kind.read(value, flag_of(name, spec))
        except LoadgenError as exc:
            raise ScenarioError(f"{where}: field '{key}': {exc}") from None
    return scenario


def list_scenarios() -> list[Scenario]:
    return [load_scenario(str(p)) for p in scenario_files()]
