"""What `loadgen run`, `sweep` and `locust` share: the run configuration from the command line, and the checks
and objects needed before anything is created or started."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from backends.errors import BackendError
from backends.registry import FRAMEWORKS
from backends.sim import command as sim_backend
from backends.sim.config import SimConfig
from loadgen import redaction
from loadgen.config import OutputConfig, RunConfig, build_run_config, given, load_scenario
from loadgen.config.assemble import read_dataset
from loadgen.endpoint import endpoint_name, launch_spec, sim_config
from loadgen.errors import LoadgenError
from loadgen.listeners.files import write_html_report
from loadgen.redaction import redact, remember_argv, url_secrets
from loadgen.workload.datasets import Dataset
from loadgen.workload.prompts import HFTokenizer
from scenarios.catalog import CatalogError, get_model
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
    dataset: Dataset | None = None  # read and checked before anything starts

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
    remember_run_secrets(config)
    sim = sim_config(config.target)
    if sim is not None:
        check_tensor_parallel(sim.model, sim.tp, "--gpus")
    elif config.target.backend in FRAMEWORKS and not config.target.url:
        spec = framework_model(config.target.model)
        if spec is not None:
            check_tensor_parallel(spec, config.target.tp or config.target.gpus,
                                  "--tp" if config.target.tp else "--gpus")
    tokenizer = HFTokenizer(config.workload.tokenizer) if config.workload.tokenizer else None
    dataset = read_dataset(config, tokenizer)
    api_key = config.target.api_key or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    model_label = sim.model.name if sim else (config.target.model or "server")
    return Prepared(config, sim, tokenizer, headers, model_label, dataset)


@dataclass(frozen=True)
class Heads:
    name: str
    num_heads: int
    num_kv_heads: int


def framework_model(model: str | None) -> Heads | None:
    """The attention heads of a launched framework's model, when loadgen can know them: a catalog model, or a
    local directory's config.json (an HF id is resolved by the framework, which checks it itself)."""
    if not model:
        return None
    try:
        spec = get_model(model)
        return Heads(spec.name, spec.num_heads, spec.num_kv_heads)
    except CatalogError:
        pass
    config = Path(model).expanduser() / "config.json"
    try:
        data = json.loads(config.read_text())
        heads = int(data["num_attention_heads"])
        return Heads(model, heads, int(data.get("num_key_value_heads") or heads))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_tensor_parallel(model, tp: int, flag: str) -> None:
    """Tensor parallelism splits attention heads across GPUs: the heads must divide evenly, and KV heads either
    divide evenly or are replicated a whole number of times (vLLM's and SGLang's rule); a degree the engines
    refuse is refused here rather than simulated or launched."""
    heads, kv = model.num_heads, model.num_kv_heads
    if tp > heads:
        raise LoadgenError(f"{flag} {tp}: {model.name} has only {heads} attention heads, so tensor parallelism "
                           f"above {heads} is impossible; use at most {heads} GPUs")
    if heads % tp or (kv % tp if kv >= tp else tp % kv):
        good = [d for d in range(1, heads + 1) if not heads % d and not (kv % d if kv >= d else d % kv)]
        raise LoadgenError(f"{flag} {tp}: {model.name}'s {heads} attention heads ({kv} KV heads) do not split "
                           f"evenly over {tp} GPUs; use one of {', '.join(map(str, good))}")


def error_line(exc: BaseException) -> str:
    """A user error as the one line it is promised to be: secrets masked, a library's multi-line message folded."""
    return redact(" ".join(str(exc).split()) or type(exc).__name__)


def remember_run_secrets(config: RunConfig) -> None:
    """The secrets of this run, known by value before anything is written (loadgen/redaction.py)."""
    target = config.target
    redaction.remember(target.api_key, os.environ.get("OPENAI_API_KEY"), *url_secrets(target.url or ""))
    remember_argv(target.engine_arg)


def print_result(output: OutputConfig, summary: dict, text: str, run_dir: Path) -> None:
    text = redact(text)
    if output.json:
        print(redact(json.dumps(summary, indent=2)))
        if not output.quiet:
            print(text, file=sys.stderr)
    elif not output.quiet:
        print(text)
    else:
        print(run_dir)


def write_report_if_asked(output: OutputConfig, directory: Path) -> None:
    if output.report:
        write_html_report(directory)


def print_launch(prepared: Prepared) -> int:
    """--dry-run: the exact launch command and environment (or what would be attached to); starts nothing."""
    target = prepared.config.target
    if target.backend in FRAMEWORKS:
        if target.url:
            print(redact(f"# attach to {target.url}: nothing would be launched"))
            return 0
        spec = launch_spec(target, prepared.config.workload.max_context, target.port or 8000)
        endpoint = endpoint_name(target, spec)
        for key, value in spec.env.items():
            print(redact(f"export {key}={shlex.quote(value)}"))
        print(redact(shlex.join(spec.argv)))
        print(f"# ready when GET {spec.url}{spec.ready_path} answers 200; metrics: "
              f"{spec.metrics_path or 'none'}; endpoint: {endpoint}; weights: {spec.weights}")
        return 0
    sim = prepared.sim
    if sim is not None:
        print(shlex.join(sim_backend.launch_argv(sim.model.name, sim.gpu.key, sim.tp, "127.0.0.1", target.port or 8000,
                                                 sim.profile.path if sim.profile else None)))
        return 0
    print(redact(f"# attach to {target.url}: nothing would be launched"))
    return 0
