"""What `loadgen run`, `sweep` and `locust` share: the run configuration from the command line, and the checks
and objects needed before anything is created or started."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from backends.errors import BackendError
from backends.sim.config import SimConfig
from loadgen.config import OutputConfig, RunConfig, build_run_config, given, load_scenario
from loadgen.endpoint import sim_config
from loadgen.errors import LoadgenError
from loadgen.listeners.files import write_html_report
from loadgen.workload.prompts import HFTokenizer
from scenarios.catalog import CatalogError
from scenarios.scenario import Scenario

USER_ERRORS = (LoadgenError, CatalogError, BackendError)


def scenario_of(args: argparse.Namespace) -> Scenario | None:
    return load_scenario(args.scenario) if getattr(args, "scenario", None) else None


def run_config(args: argparse.Namespace, scenario: Scenario | None = None) -> RunConfig:
    """The RunConfig of the flags typed (and the scenario they name): the one place argparse's output is read."""
    return build_run_config(given(args), scenario if scenario is not None else scenario_of(args))


@dataclass
class Prepared:
    """A checked config and what it needs that is not configuration: the sim's model, the tokenizer, headers."""

    config: RunConfig
    sim: SimConfig | None
    tokenizer: HFTokenizer | None
    headers: dict[str, str]
    model_label: str

    @property
    def count_tokens(self):
        return self.tokenizer.count if self.tokenizer else None


def prepare(config: RunConfig) -> Prepared:
    """Check every user input that needs no server before anything is created or started."""
    if config.output.report:  # before the run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise LoadgenError("--report needs matplotlib: pip install -e '.[report]' (or pip install matplotlib), "
                               "or drop --report and run `loadgen report DIR` later") from None
    sim = sim_config(config.target)
    tokenizer = HFTokenizer(config.workload.tokenizer) if config.workload.tokenizer else None
    api_key = config.target.api_key or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    model_label = sim.model.name if sim else (config.target.model or "server")
    return Prepared(config, sim, tokenizer, headers, model_label)


def print_result(output: OutputConfig, summary: dict, text: str, run_dir: Path) -> None:
    if output.json:
        print(json.dumps(summary, indent=2))
        if not output.quiet:
            print(text, file=sys.stderr)
    elif not output.quiet:
        print(text)
    else:
        print(run_dir)


def write_report_if_asked(output: OutputConfig, directory: Path) -> None:
    if output.report:
        write_html_report(directory)
