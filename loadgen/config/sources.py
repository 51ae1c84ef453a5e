"""A RunConfig from its sources, in order of precedence: a flag the user typed, then the scenario file's field,
then the field's default. The flags themselves are generated from the fields (flag, help, choices), so the
command line, a scenario file and `loadgen locust`'s processes describe an option in one place."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from loadgen.config.commands import SweepConfig
from loadgen.config.fields import Option, Section, flag_of, options
from loadgen.config.kinds import ConfigError
from loadgen.config.run import RUN_SECTIONS, TRACE, RunConfig
from loadgen.config.scenario_file import CLOSED, scenario_fields, value_at
from loadgen.errors import LoadgenError
from scenarios.scenario import Scenario

# argparse groups of `--help`, by section
HELP_GROUPS = {"target": "target", "workload": "workload", "load": "load", "slo": "load", "output": "output",
               "telemetry": "output", "sweep": "load"}
LOAD_MODE = ("load.qps", "load.concurrency", "load.arrival")
SCENARIO_HELP = "scenario name (see `loadgen scenarios`) or YAML file; flags override its fields"


def add_arguments(parser: argparse.ArgumentParser, sections: Mapping[str, type[Section]],
                  only: Mapping[str, tuple[str, ...]] | None = None, skip: tuple[str, ...] = (),
                  aliases: Mapping[str, tuple[str, ...]] | None = None, groups: dict | None = None,
                  scenario: bool = True) -> dict:
    """A flag per option of `sections` (all, or `only` those of a section), into `--help` groups; dest is
    "section.field" and every default is None, so that what the user typed is told apart from defaults."""
    groups = {} if groups is None else groups

    def group(name: str):
        if name not in groups:
            groups[name] = parser.add_argument_group(name)
        return groups[name]

    if scenario:
        group("target").add_argument("--scenario", help=SCENARIO_HELP)
    for section_name, section in sections.items():
        for name, spec in options(section):
            key = f"{section_name}.{name}"
            if key in skip or (only is not None and section_name in only and name not in only[section_name]):
                continue
            add_flag(group(HELP_GROUPS.get(section_name, section_name)), key, name, spec,
                     (aliases or {}).get(key, ()))
    return groups


def add_flag(group, dest: str, name: str, spec: Option, aliases: tuple[str, ...] = (), prefix: str = "--") -> None:
    flag = prefix + flag_of(name, spec)[2:]
    kw: dict[str, Any] = {"dest": dest, "default": None}
    if spec.action == "switch":
        kw.update(action="store_const", const=spec.const)
    else:
        if spec.action == "append":
            kw["action"] = "append"
        if spec.choices:
            kw["choices"] = spec.choices
        else:
            kw["metavar"] = spec.metavar or flag_of(name, spec)[2:].replace("-", "_").upper()
    group.add_argument(flag, help=spec.help, **kw)
    for alias in aliases:
        group.add_argument(alias, help=argparse.SUPPRESS, **kw)


def given(args: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """The "section.field" values the user typed (argparse leaves the others None)."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return {k: v for k, v in values.items() if "." in k and v is not None}


def _from_file(scenario: Scenario | None, sections: tuple[str, ...]) -> dict[str, Any]:
    if scenario is None:
        return {}
    out = {f"{s}.{name}": value_at(scenario, key) for key, (s, name, _) in scenario_fields().items()
           if s in sections and value_at(scenario, key) is not None}
    if "workload.dataset" in out:  # relative to the scenario file (or a shipped sample)
        out["workload.dataset"] = str(scenario.resolve_path(out["workload.dataset"]))
    return out


def build_section(cls: type[Section], section_name: str, values: Mapping[str, Any]) -> Section:
    """One section from the "section.field" values of its own name (the others are ignored)."""
    own = {key.split(".", 1)[1]: v for key, v in values.items() if key.split(".", 1)[0] == section_name}
    return cls(**own)


def build_run_config(flags: Mapping[str, Any], scenario: Scenario | None = None) -> RunConfig:
    """flags: "section.field" -> the value typed (text, as a flag gives it, or already typed). A scenario's
    load mode (arrival.kind, qps, concurrency) is taken whole or not at all: any of --qps, --concurrency or
    --arrival replaces it."""
    file = _from_file(scenario, tuple(RUN_SECTIONS))
    if any(key in flags for key in LOAD_MODE):
        for key in LOAD_MODE:
            file.pop(key, None)
    elif scenario is not None:
        kind = value_at(scenario, "arrival.kind")
        if kind == CLOSED:
            if "load.concurrency" not in file:
                raise ConfigError(f"scenario {scenario.name}: arrival.kind closed needs arrival.concurrency")
            file.pop("load.qps", None)
        elif kind is not None:
            file["load.arrival"] = kind
            if kind != TRACE:
                file.pop("load.concurrency", None)
        elif "load.qps" in file:
            file.pop("load.concurrency", None)
    values = {**file, **{k: v for k, v in flags.items() if k.split(".", 1)[0] in RUN_SECTIONS}}
    sections = {name: build_section(cls, name, values) for name, cls in RUN_SECTIONS.items()}
    config = RunConfig(**sections, scenario_name=scenario.name if scenario else None)
    tokenizer = model_tokenizer(config)
    if tokenizer is not None:
        config = replace(config, workload=replace(config.workload, tokenizer=tokenizer))
    return config


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def model_tokenizer(config: RunConfig) -> str | None:
    """The served model's own tokenizer when --model is a local directory holding one and --tokenizer was not
    given. Without it prompts are sized in approximate words, which a real tokenizer may count as nearly twice
    the tokens asked for (LightLLM on the H200 prefilled about 950 tokens of a "512-token" prompt), so every
    latency would describe a different workload. The sim counts words exactly, so it keeps the approximation."""
    model = config.target.model
    if config.workload.tokenizer or config.target.backend == "sim" or not model:
        return None
    directory = Path(model).expanduser()
    if not directory.is_dir() or not any((directory / name).is_file() for name in TOKENIZER_FILES):
        return None
    return str(directory)


def build_sweep_config(flags: Mapping[str, Any], scenario: Scenario | None = None) -> SweepConfig:
    """The sweep's points from --qps/--concurrency, else the scenario's load_points (unless --until-slo)."""
    own = {k: v for k, v in flags.items() if k.startswith("sweep.")}
    if not {"sweep.qps", "sweep.concurrency", "sweep.until_slo"} & own.keys():
        own = {**_from_file(scenario, ("sweep",)), **own}
    return build_section(SweepConfig, "sweep", own)  # type: ignore[return-value]


def to_flags(section: Section, names: tuple[str, ...], prefix: str = "--") -> list[str]:
    """argv that gives these fields of `section` their values (what `loadgen locust` passes to Locust)."""
    spec_of = dict(options(section))
    argv: list[str] = []
    shown = section.to_text()
    for name in names:
        if name not in shown:
            continue
        spec = spec_of[name]
        flag = prefix + flag_of(name, spec)[2:]
        if spec.action == "switch":
            if shown[name] == spec.const:
                argv.append(flag)
        elif spec.action == "append":
            for item in shown[name]:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(shown[name])]
    return argv


def as_type(kind, flag: str):
    """An argparse `type=` for commands outside RunConfig (gpu-sample, serve-sim): the same kind, argparse's
    message format."""

    def read(text: str):
        try:
            return kind.read(text, flag)
        except LoadgenError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace(f"{flag}: ", "", 1)) from None

    return read
