"""The locustfile's side of the RunConfig: its --loadgen-* options, generated from the same fields as `loadgen
run`'s flags, and the RunConfig a Locust process builds from them (each process, master or worker, reads its
own command line; `loadgen locust` writes them from its RunConfig). Kept apart from the locustfile so that it
needs no gevent."""

from __future__ import annotations

import argparse
from dataclasses import replace

from loadgen.config import RUN_SECTIONS, RunConfig, WorkloadConfig, build_run_config, given, load_scenario
from loadgen.config.commands import LOCUSTFILE_FIELDS
from loadgen.config.fields import options
from loadgen.config.sources import add_flag
from loadgen.workload.prompts import HFTokenizer, PromptSynthesizer


def add_locust_options(parser) -> None:
    """loadgen's workload options as --loadgen-<flag of `loadgen run`>, into Locust's parser."""
    g = parser.add_argument_group("loadgen")
    for section, names in LOCUSTFILE_FIELDS.items():
        for name, spec in options(RUN_SECTIONS[section]):
            if name in names:
                add_flag(g, f"{section}.{name}", name, spec, prefix="--loadgen-")
    g.add_argument("--loadgen-scenario", default=None, help="a loadgen scenario (name or YAML file) whose workload "
                                                            "the --loadgen-* options override")
    g.add_argument("--loadgen-backend", default=None,
                   help="the server's framework (vllm: usage in every chunk, so empty-text tokens count)")
    g.add_argument("--loadgen-scenario-name", default=None, help=argparse.SUPPRESS)  # `loadgen locust --scenario`
    g.add_argument("--loadgen-run-dir", default="", help="write requests.jsonl and summary.json here")
    g.add_argument("--loadgen-simulated", action="store_true", help=argparse.SUPPRESS)


def run_config(environment) -> RunConfig:
    """This process's RunConfig, from its --loadgen-* options (and --loadgen-scenario), read once."""
    if getattr(environment, "loadgen_config", None) is None:
        o = environment.parsed_options
        scenario = load_scenario(o.loadgen_scenario) if o.loadgen_scenario else None
        flags = {k: v for k, v in given(o).items() if k.split(".", 1)[0] in LOCUSTFILE_FIELDS}
        host = environment.host or o.host
        config = build_run_config({**flags, "target.url": host} if host else flags, scenario)
        if o.loadgen_scenario_name:  # the options were resolved from this scenario by `loadgen locust`
            config = replace(config, scenario_name=o.loadgen_scenario_name)
        environment.loadgen_config = config
    return environment.loadgen_config


def prompt_source(config: RunConfig) -> str:
    path = config.workload.tokenizer
    return PromptSynthesizer(HFTokenizer(path) if path else None).source


def describe_workload(w: WorkloadConfig) -> dict:
    """The workload as run.json records it (the master of workers builds no workload of its own)."""
    if w.dataset:
        return {"source": "dataset", "dataset": w.dataset, "format": w.dataset_format, "multi_turn": w.multi_turn,
                "seed": w.seed}
    out = {"source": "synthetic", "input_len": str(w.input_len), "output_len": str(w.output_len), "seed": w.seed}
    if w.prefix_groups:
        out.update(prefix_groups=w.prefix_groups, prefix_len=w.prefix_len)
    if w.turns > 1:
        out["turns"] = w.turns
    return out
