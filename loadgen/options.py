"""Run options: the flags, their defaults, and how a scenario file fills what the command line leaves out.

Precedence: an explicit flag, then the scenario's field, then the default. Scenario values go through the
same parsers as flags, so a bad value names its field either way.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from loadgen.arrivals import ARRIVAL_KINDS, ArrivalProcess
from loadgen.datasets import FORMATS, load_dataset
from loadgen.distributions import LengthDistribution
from loadgen.errors import LoadgenError
from loadgen.prompts import PromptSynthesizer
from loadgen.runner import LoadPlan
from loadgen.slo import parse_slo
from loadgen.units import parse_duration
from loadgen.workload import DatasetWorkload, Workload
from scenarios.scenario import Scenario, find_data_file

DEFAULT_QPS = 10.0
DEFAULT_NUM_REQUESTS = 100
TRACE = "trace"


def _number(kind: type, low: float, inclusive: bool, what: str) -> Callable[[Any], Any]:
    def parse(text: Any) -> Any:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {what}") from None
        if value != value or value < low or (not inclusive and value == low):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'>=' if inclusive else '>'} {low:g}")
        return value

    return parse


positive_float = _number(float, 0, False, "number")
positive_int = _number(int, 0, False, "integer")
nonneg_int = _number(int, 0, True, "integer")


def fraction(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def duration(text: Any) -> float:
    try:
        value = parse_duration(str(text))
    except LoadgenError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive duration")
    return value


def workers_count(text: Any) -> int | str:
    """'auto' or a positive number of client processes."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers: give a positive integer or auto") from None


def number_list(kind: Callable[[Any], Any]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        items = [x for x in str(text).split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("give a comma-separated list, e.g. 1,2,4,8")
        return [kind(x.strip()) for x in items]

    return parse


# dest -> (default, converter for scenario values)
DEFAULTS: dict[str, tuple[Any, Callable[[Any], Any] | None]] = {
    "backend": (None, None),
    "url": (None, None),
    "model": (None, str),
    "gpu": ("h100", str),
    "gpus": (1, positive_int),
    "endpoint": (None, str),
    "tp": (None, positive_int),
    "engine_arg": (None, None),
    "engine_cmd": (None, None),
    "engine_path": (None, None),
    "docker": (False, None),
    "dry_run": (False, None),
    "port": (None, positive_int),
    "api_key": (None, None),
    "ignore_eos": (True, None),
    "startup_timeout": (None, duration),
    "profile": (None, str),
    "input_len": ("512", str),
    "output_len": ("128", str),
    "max_context": (None, positive_int),
    "tokenizer": (None, str),
    "seed": (0, int),
    "dataset": (None, str),
    "dataset_format": (None, str),
    "multi_turn": (False, bool),
    "prefix_groups": (0, nonneg_int),
    "prefix_len": (0, nonneg_int),
    "turns": (1, positive_int),
    "qps": (None, positive_float),
    "arrival": ("poisson", str),
    "burstiness": (1.0, positive_float),
    "time_scale": (1.0, positive_float),
    "concurrency": (None, positive_int),
    "num_requests": (None, positive_int),
    "duration": (None, duration),
    "warmup": (0, nonneg_int),
    "timeout": (600.0, duration),
    "idle_timeout": (None, duration),
    "max_errors": (None, nonneg_int),
    "max_error_rate": (None, None),
    "slo": (None, str),
    "workers": ("auto", workers_count),
    "output": (None, None),
    "report": (False, None),
    "csv": (False, None),
    "gpu_telemetry": (False, None),
    "gpu_sample_interval": (0.5, duration),
    "scrape_interval": (1.0, duration),
    "json": (False, None),
    "quiet": (False, None),
}

# dest -> where the scenario file keeps it
SCENARIO_FIELDS = {
    "model": "model", "gpu": "gpu", "gpus": "gpus", "endpoint": "endpoint", "num_requests": "num_requests",
    "duration": "duration", "warmup": "warmup", "slo": "slo",
    "input_len": "workload.input_len", "output_len": "workload.output_len", "dataset": "workload.dataset",
    "dataset_format": "workload.dataset_format", "multi_turn": "workload.multi_turn",
    "prefix_groups": "workload.prefix_groups", "prefix_len": "workload.prefix_len", "turns": "workload.turns",
    "qps": "arrival.qps", "burstiness": "arrival.burstiness", "concurrency": "arrival.concurrency",
    "time_scale": "arrival.time_scale",
}
LOAD_MODE = ("qps", "concurrency", "arrival")


def add_run_arguments(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """Every flag defaults to None so that resolve() can tell what the user typed."""
    t = p.add_argument_group("target")
    t.add_argument("--scenario", help="scenario name (see `loadgen scenarios`) or YAML file; flags override its fields")
    t.add_argument("--backend", choices=["sim", "openai", "vllm", "tgi", "trtllm", "lightllm", "sglang"],
                   help="sim: the embedded simulated engine (default without --url); openai: any OpenAI-compatible "
                        "server at --url; vllm, tgi, trtllm, lightllm, sglang: launch that framework (or attach "
                        "to it with --url)")
    t.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8000 (launches nothing)")
    t.add_argument("--model", help="catalog model (7b, 13b, 70b, 8b, llama-3-70b, tiny) for the sim; with --url, "
                                   "the model id to request (default: the first the server lists)")
    t.add_argument("--gpu", help="sim only: catalog GPU (a800, a100-80g, h100, h200, rtx4090, rtx3090); default h100")
    t.add_argument("--gpus", type=positive_int, help="GPUs, used as tensor parallelism (default 1)")
    t.add_argument("--endpoint", choices=["completions", "chat", "tgi", "lightllm", "triton"],
                   help="protocol: OpenAI completions or chat, TGI or LightLLM /generate_stream, Triton "
                        "generate_stream (default: the backend's own; completions for sim/openai)")
    t.add_argument("--tp", type=positive_int, help="tensor parallelism for a launched framework (default: --gpus)")
    t.add_argument("--engine-arg", action="append", help="extra flag passed to the launched framework (repeatable), "
                                                          "e.g. --engine-arg=--max-num-seqs=128")
    t.add_argument("--engine-cmd", help="replace the framework's executable, e.g. '/opt/venv/bin/python' for vLLM")
    t.add_argument("--engine-path", action="append", metavar="DIR",
                   help="put DIR first on the launched framework's PYTHONPATH (repeatable): an engine installed with "
                        "`pip install --target DIR` from `loadgen engine-wheels`, for machines without internet")
    t.add_argument("--docker", action="store_const", const=True, help="launch the framework's official image")
    t.add_argument("--port", type=positive_int, help="port for a launched framework (default: a free one)")
    t.add_argument("--dry-run", action="store_const", const=True,
                   help="print the exact launch command and environment, start nothing")
    t.add_argument("--api-key", help="bearer token for the server (default: $OPENAI_API_KEY); never written to disk")
    t.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_const", const=False,
                   help="let the server stop at EOS instead of forcing exactly --output-len tokens")
    t.add_argument("--startup-timeout", type=duration,
                   help="wait this long for a launched server to be ready (default 120s for the sim, 30m otherwise)")
    t.add_argument("--profile", help="sim only: hardware profile JSON from `python -m training_bench micro profile`; "
                                     "step times from measured operators instead of catalog peaks")

    w = p.add_argument_group("workload")
    w.add_argument("--input-len", help="prompt tokens: N, fixed:N, uniform:MIN,MAX, normal:MEAN,STD, "
                                       "lognormal:MEAN,SIGMA (default 512)")
    w.add_argument("--output-len", help="output tokens, same forms as --input-len (default 128)")
    w.add_argument("--max-context", type=positive_int, help="clip input+output to this many tokens "
                                                            "(default: the model's context length)")
    w.add_argument("--tokenizer", help="tokenizer.json or a tokenizer directory, for exact prompt lengths "
                                       "(default: an approximation, recorded in the results)")
    w.add_argument("--seed", type=int, help="seed for lengths, prompts, sampling and arrivals (default 0)")
    w.add_argument("--dataset", help="ShareGPT JSON/JSONL, JSONL prompts, or an Azure/BurstGPT CSV trace "
                                     "(bare names find scenarios/data/ samples)")
    w.add_argument("--dataset-format", choices=FORMATS, help="dataset format (default: detected)")
    w.add_argument("--multi-turn", action="store_const", const=True,
                   help="replay ShareGPT conversations turn by turn, resending the history")
    w.add_argument("--prefix-groups", type=nonneg_int, help="N distinct shared system prompts (with --prefix-len)")
    w.add_argument("--prefix-len", type=nonneg_int, help="tokens in each shared system prompt")
    w.add_argument("--turns", type=positive_int, help="synthetic conversations of this many turns (default 1)")

    a = p.add_argument_group("load")
    if sweep:
        a.add_argument("--qps", type=number_list(positive_float), help="open-loop points, requests/s, e.g. 1,2,4,8")
        a.add_argument("--concurrency", type=number_list(positive_int), help="closed-loop points, users, e.g. 1,4,16,64")
    else:
        a.add_argument("--qps", type=positive_float,
                       help=f"open loop: requests per second (default {DEFAULT_QPS:g} when no --concurrency)")
        a.add_argument("--concurrency", type=positive_int, help="closed loop: N users, each sends when its last finished")
    a.add_argument("--arrival", choices=[*ARRIVAL_KINDS, TRACE],
                   help="open-loop arrivals (default poisson); trace: the dataset's own timestamps")
    a.add_argument("--burstiness", type=positive_float,
                   help="gamma shape: 1 = Poisson, <1 burstier, >1 smoother (CV = 1/sqrt(burstiness))")
    a.add_argument("--time-scale", type=positive_float,
                   help="trace replay: multiply trace times by this (0.5 = twice as fast; default 1)")
    a.add_argument("--num-requests", type=positive_int,
                   help=f"measured requests, or conversations (default {DEFAULT_NUM_REQUESTS} unless --duration)")
    a.add_argument("--duration", type=duration, help="stop sending after this long, e.g. 60s or 5m")
    a.add_argument("--warmup", type=nonneg_int, help="requests sent first and excluded from the metrics (default 0)")
    a.add_argument("--timeout", type=duration, help="per-request limit, e.g. 30s (default 600s)")
    a.add_argument("--idle-timeout", type=duration,
                   help="fail a request after this long without a byte, e.g. 30s (default: no limit)")
    a.add_argument("--max-errors", type=nonneg_int,
                   help="stop the run early once more than N requests failed (errors and timeouts)")
    a.add_argument("--max-error-rate", type=fraction,
                   help="stop the run early once more than this fraction of finished requests failed "
                        "(checked after 20 requests), e.g. 0.5")
    a.add_argument("--slo", help="goodput objectives, e.g. ttft:500ms,tpot:50ms,e2el:10s")
    a.add_argument("--workers", type=workers_count,
                   help="client processes that share the load (default auto: one when the server runs on this "
                        "host, else one per 128 closed-loop users or 100 req/s, at most one per core)")

    o = p.add_argument_group("output")
    o.add_argument("--output", help="run directory (default results/<time>-<backend>-<model>)")
    o.add_argument("--json", action="store_const", const=True, help="print the summary as JSON to stdout")
    o.add_argument("--quiet", action="store_const", const=True, help="no progress bar and no table")
    o.add_argument("--report", action="store_const", const=True, help="write report.html at the end (needs matplotlib)")
    o.add_argument("--csv", action="store_const", const=True, help="also write requests.csv and summary.csv")
    o.add_argument("--gpu-telemetry", action="store_const", const=True,
                   help="sample this machine's GPUs with NVML into gpu.jsonl (power, utilisation, memory, clocks) "
                        "and report energy per output token; for a server on this host")
    o.add_argument("--gpu-sample-interval", type=duration, help="NVML sampling period (default 500ms)")
    o.add_argument("--scrape-interval", type=duration,
                   help="scrape the server's Prometheus /metrics this often into server_metrics.jsonl (default 1s)")


def _scenario_value(scenario: Scenario, path: str) -> Any:
    node: Any = scenario.data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def resolve(args: argparse.Namespace, scenario: Scenario | None) -> argparse.Namespace:
    """Fill every unset option from the scenario, then from the defaults."""
    explicit = {k for k in DEFAULTS if getattr(args, k, None) is not None}
    out = argparse.Namespace(**vars(args))
    for dest, (default, convert) in DEFAULTS.items():
        if dest in explicit:
            continue
        value = None
        if scenario is not None and dest in SCENARIO_FIELDS and not (dest in LOAD_MODE and explicit & set(LOAD_MODE)):
            value = _scenario_value(scenario, SCENARIO_FIELDS[dest])
            if value is not None and convert is not None:
                try:
                    value = convert(value)
                except argparse.ArgumentTypeError as exc:
                    raise LoadgenError(f"scenario {scenario.name}: field '{SCENARIO_FIELDS[dest]}': {exc}") from None
            if dest == "dataset" and value is not None:
                value = str(scenario.resolve_path(value))
        setattr(out, dest, default if value is None else value)
    if scenario is not None and not explicit & set(LOAD_MODE):
        kind = _scenario_value(scenario, "arrival.kind")
        if kind == "closed":
            if out.concurrency is None:
                raise LoadgenError(f"scenario {scenario.name}: arrival.kind closed needs arrival.concurrency")
            out.qps = None
        elif kind is not None:
            out.arrival = kind
            if kind != TRACE:
                out.concurrency = None
        elif out.qps is not None:
            out.concurrency = None
    out.scenario_name = scenario.name if scenario else None
    return out


def load_plan(opts: argparse.Namespace, qps: float | None = None, concurrency: int | None = None) -> LoadPlan:
    """The load of one run (or one sweep point, whose qps/concurrency is given)."""
    if qps is None and concurrency is None:
        qps, concurrency = opts.qps, opts.concurrency
    if qps is not None and concurrency is not None:
        raise LoadgenError("--qps (open loop) and --concurrency (closed loop) exclude each other; give one")
    if opts.burstiness != 1.0 and opts.arrival != "gamma":
        raise LoadgenError("--burstiness applies to --arrival gamma only; add --arrival gamma or drop it")
    num = opts.num_requests
    if num is None and opts.duration is None and opts.arrival != TRACE:
        num = DEFAULT_NUM_REQUESTS
    common = dict(num_requests=num, duration_s=opts.duration, warmup=opts.warmup, timeout_s=opts.timeout,
                  seed=opts.seed, idle_timeout_s=opts.idle_timeout, max_errors=opts.max_errors,
                  max_error_rate=opts.max_error_rate)
    if opts.arrival == TRACE:
        if concurrency is not None or qps is not None:
            raise LoadgenError("--arrival trace sends at the trace's timestamps; drop --qps/--concurrency "
                               "(use --time-scale to speed it up)")
        if not opts.dataset:
            raise LoadgenError("--arrival trace needs --dataset with a CSV trace (Azure or BurstGPT columns)")
        return LoadPlan(trace_time_scale=opts.time_scale, **common)
    if concurrency is not None:
        return LoadPlan(concurrency=concurrency, **common)
    return LoadPlan(arrival=ArrivalProcess(opts.arrival, qps if qps is not None else DEFAULT_QPS, opts.burstiness),
                    **common)


def check_workload_options(opts: argparse.Namespace) -> None:
    """Validate everything about the workload that needs no server, before anything is started."""
    LengthDistribution.parse(opts.input_len, "--input-len")
    LengthDistribution.parse(opts.output_len, "--output-len")
    if opts.slo:
        parse_slo(opts.slo)
    if opts.dataset and (opts.prefix_groups or opts.turns > 1):
        raise LoadgenError("--prefix-groups/--turns shape synthetic workloads; with --dataset use --multi-turn")
    if opts.multi_turn and not opts.dataset:
        raise LoadgenError("--multi-turn replays a conversation dataset: add --dataset (or use --turns N)")


def build_workload(opts: argparse.Namespace, max_context: int, tokenizer) -> Workload | DatasetWorkload:
    synth = PromptSynthesizer(tokenizer)
    if opts.dataset:
        dataset = load_dataset(find_data_file(opts.dataset), opts.dataset_format, tokenizer.count if tokenizer else None)
        workload = DatasetWorkload(dataset, max_context, synth, opts.seed, multi_turn=bool(opts.multi_turn))
        if opts.arrival == TRACE and not workload.is_trace:
            raise LoadgenError(f"--arrival trace needs a CSV trace, but {opts.dataset} is a {dataset.format} dataset")
        return workload
    return Workload(LengthDistribution.parse(opts.input_len, "--input-len"),
                    LengthDistribution.parse(opts.output_len, "--output-len"), max_context, synth, opts.seed,
                    prefix_groups=opts.prefix_groups, prefix_len=opts.prefix_len, turns=opts.turns)
