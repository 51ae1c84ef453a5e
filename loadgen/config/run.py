"""`RunConfig`: everything one load-test run needs to know, as frozen, documented, checked dataclasses.

Every field is declared once, with its kind (how its value is read), its help (its documentation, also shown by
`--help`), its flag and its place in a scenario file. The command line, scenario files, sweep points and
`loadgen locust` all build one of these; nothing downstream reads argparse. A bad value or combination raises
`ConfigError` naming the flag (or scenario field) and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from backends.registry import ENDPOINTS, FRAMEWORKS
from loadgen.config import kinds as k
from loadgen.config.fields import Section, option
from loadgen.config.kinds import ConfigError
from loadgen.errors import LoadgenError
from loadgen.load.arrivals import ARRIVAL_KINDS
from loadgen.workload.datasets import FORMATS

TRACE = "trace"
DEFAULT_QPS = 10.0
DEFAULT_NUM_REQUESTS = 100
BACKENDS = ("sim", "openai", *FRAMEWORKS)
OFF = ("0", "off", "none")


def _off_or_duration(raw, flag: str) -> float | None:
    """A duration, or 0/off for none (a watchdog that may be switched off)."""
    if isinstance(raw, str) and raw.strip().lower() in OFF or raw == 0 and not isinstance(raw, bool):
        return None
    try:
        return k.duration.read(raw, flag)
    except LoadgenError:
        raise LoadgenError(f"{flag}: {raw!r} is not a duration: give one such as 60s or 2m, or 0 (off) for "
                           "none") from None


OFF_OR_DURATION = k.Kind(_off_or_duration, k.duration.yaml_types, k.duration.show)


@dataclass(frozen=True)
class TargetConfig(Section):
    """Where requests go: the embedded sim, a framework to launch, or a running server at a URL."""

    backend: str | None = option(
        None, k.choice(BACKENDS), choices=BACKENDS,
        help="sim: the embedded simulated engine (default without --url); openai: any OpenAI-compatible server at "
             "--url; vllm, tgi, trtllm, lightllm, sglang: launch that framework (or attach to it with --url)")
    url: str | None = option(None, k.text, help="base URL of a running server, e.g. http://127.0.0.1:8000 "
                                                "(launches nothing)")
    model: str | None = option(None, k.text, scenario="model",
                               help="catalog model (7b, 13b, 70b, 8b, llama-3-70b, tiny) for the sim; with --url, the "
                                    "model id to request (default: the first the server lists)")
    gpu: str = option("h100", k.text, scenario="gpu", help="sim only: catalog GPU (a800, a100-80g, h100, h200, "
                                                           "rtx4090, rtx3090); default h100")
    gpus: int = option(1, k.positive_int, scenario="gpus", help="GPUs, used as tensor parallelism (default 1)")
    endpoint: str | None = option(
        None, k.choice(ENDPOINTS), scenario="endpoint", choices=ENDPOINTS,
        help="protocol: OpenAI completions or chat, TGI or LightLLM /generate_stream, Triton generate_stream "
             "(default: the backend's own; completions for sim/openai)")
    tp: int | None = option(None, k.positive_int, help="tensor parallelism for a launched framework (default: --gpus)")
    engine_arg: tuple[str, ...] = option((), k.repeated(k.text), action="append",
                                         help="extra flag passed to the launched framework (repeatable), e.g. "
                                              "--engine-arg=--max-num-seqs=128")
    engine_cmd: str | None = option(None, k.text, help="replace the framework's executable, e.g. "
                                                       "'/opt/venv/bin/python' for vLLM")
    engine_path: tuple[str, ...] = option(
        (), k.repeated(k.text), action="append", metavar="DIR",
        help="put DIR first on the launched framework's PYTHONPATH (repeatable): an engine installed with `pip "
             "install --target DIR` from `loadgen engine-wheels`, for machines without internet")
    docker: bool = option(False, k.switch, action="switch", help="launch the framework's official image")
    port: int | None = option(None, k.port, help="port for a launched framework (default: a free one)")
    dry_run: bool = option(False, k.switch, action="switch",
                           help="print the exact launch command and environment, start nothing")
    api_key: str | None = option(None, k.text, repr=False, help="bearer token for the server (default: "
                                                                 "$OPENAI_API_KEY); never written to disk")
    ignore_eos: bool = option(True, k.switch, action="switch", const=False, flag="--no-ignore-eos",
                              help="let the server stop at EOS instead of forcing exactly --output-len tokens")
    startup_timeout: float | None = option(None, k.duration, help="wait this long for a launched server to be "
                                                                  "ready (default 120s for the sim, 30m otherwise)")
    profile: str | None = option(None, k.text, help="sim only: hardware profile JSON from `python -m training_bench "
                                                    "micro profile`; step times from measured operators instead of "
                                                    "catalog peaks")

    def check(self) -> None:
        """Resolves `backend` to the server that is targeted: sim without --url, openai (or the named framework)
        with one."""
        if self.url:
            if not (self.url.startswith("http://") or self.url.startswith("https://")):
                raise ConfigError(f"--url {self.url!r} needs a scheme: write http://{self.url} (or https://)", "url")
            object.__setattr__(self, "url", self.url.rstrip("/"))
            _check_base_url(self.url)
            if self.backend == "sim":
                raise ConfigError("--backend sim starts its own server; drop --url, or use --backend openai with --url")
            if self.profile:
                raise ConfigError("--profile sets the simulated engine's costs; it does not apply to --url")
            object.__setattr__(self, "backend", self.backend if self.backend in FRAMEWORKS else "openai")
        elif self.backend == "openai":
            raise ConfigError("--backend openai needs --url of a running server, e.g. --url http://127.0.0.1:8000")
        else:
            object.__setattr__(self, "backend", self.backend or "sim")
        if self.backend in FRAMEWORKS and not self.model and not self.url:
            raise ConfigError(f"--backend {self.backend} needs --model: a catalog model (7b, 13b, 70b, 8b), an HF id "
                              "or a local model directory")
        if self.backend not in FRAMEWORKS or self.url:  # flags of a launch that will not happen are mistakes
            launch = [flag for flag, given in (("--engine-arg", self.engine_arg), ("--docker", self.docker),
                                               ("--port", self.port), ("--tp", self.tp)) if given]
            if not self.url or self.backend not in FRAMEWORKS:  # attached, they tell which version serves
                launch += [flag for flag, given in (("--engine-cmd", self.engine_cmd),
                                                    ("--engine-path", self.engine_path)) if given]
            if launch:
                what = "--url attaches to a running server" if self.url else "the embedded sim is not launched by them"
                raise ConfigError(f"{launch[0]} applies to a launched framework (--backend vllm, tgi, ...), and "
                                  f"{what}; drop {launch[0]}")
        if self.engine_cmd and self.docker:
            raise ConfigError("--engine-cmd replaces the local executable; it does not combine with --docker")
        if self.engine_path and self.docker:
            raise ConfigError("--engine-path adds to the local PYTHONPATH; it does not combine with --docker")


# the API paths loadgen adds to --url itself: a base URL that already ends in one would be asked for /v1/v1/...
API_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1", "/generate_stream", "/generate",
             "/v2/models")


def _check_base_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ConfigError(f"--url {url!r} is not a valid URL ({exc}); write e.g. http://127.0.0.1:8000", "url") from None
    if not parts.hostname:
        raise ConfigError(f"--url {url!r} has no host; write e.g. http://127.0.0.1:8000", "url")
    path = parts.path.rstrip("/")
    for api in API_PATHS:
        if path.endswith(api) or f"{api}/" in path:
            base = urlunsplit((parts.scheme, parts.netloc, path[: path.index(api)], "", ""))
            raise ConfigError(f"--url {url!r} already holds the API path {api}: give the server's base URL "
                              f"{base} (loadgen adds {api if api.startswith('/v1/') else '/v1/completions'} "
                              "and the other paths itself)", "url")
    if parts.query or parts.fragment:
        raise ConfigError(f"--url {url!r} has a query or fragment, which loadgen would drop; give the base URL "
                          "only", "url")


@dataclass(frozen=True)
class WorkloadConfig(Section):
    """What is sent: synthetic lengths, or a dataset or trace, with optional shared prefixes and conversations."""

    input_len: k.LengthDistribution = option(
        "512", k.distribution, scenario="workload.input_len",
        help="prompt tokens: N, fixed:N, uniform:MIN,MAX, normal:MEAN,STD, lognormal:MEAN,SIGMA (default 512)")
    output_len: k.LengthDistribution = option("128", k.distribution, scenario="workload.output_len",
                                              help="output tokens, same forms as --input-len (default 128)")
    max_context: int | None = option(None, k.positive_int, help="clip input+output to this many tokens (default: "
                                                                "the model's context length)")
    tokenizer: str | None = option(None, k.text, help="tokenizer.json or a tokenizer directory, for exact prompt "
                                                      "lengths (default: an approximation, recorded in the results)")
    seed: int = option(0, k.nonneg_int, help="seed for lengths, prompts, sampling and arrivals (default 0)")
    dataset: str | None = option(None, k.text, scenario="workload.dataset",
                                 help="ShareGPT JSON/JSONL, JSONL prompts, or an Azure/BurstGPT CSV trace (bare names "
                                      "find scenarios/data/ samples)")
    dataset_format: str | None = option(None, k.choice(FORMATS), scenario="workload.dataset_format", choices=FORMATS,
                                        help="dataset format (default: detected)")
    multi_turn: bool = option(False, k.switch, scenario="workload.multi_turn", action="switch",
                              help="replay ShareGPT conversations turn by turn, resending the history")
    prefix_groups: int = option(0, k.nonneg_int, scenario="workload.prefix_groups",
                                help="N distinct shared system prompts (with --prefix-len)")
    prefix_len: int = option(0, k.nonneg_int, scenario="workload.prefix_len",
                             help="tokens in each shared system prompt")
    turns: int = option(1, k.positive_int, scenario="workload.turns",
                        help="synthetic conversations of this many turns (default 1)")

    def check(self) -> None:
        if self.dataset and (self.prefix_groups or self.turns > 1):
            raise ConfigError("--prefix-groups/--turns shape synthetic workloads; with --dataset use --multi-turn")
        if self.multi_turn and not self.dataset:
            raise ConfigError("--multi-turn replays a conversation dataset: add --dataset (or use --turns N)")


@dataclass(frozen=True)
class LoadConfig(Section):
    """How requests are offered: an open loop at a rate, a closed loop of users, or a trace's own times."""

    qps: float | None = option(None, k.positive_float, scenario="arrival.qps",
                               help=f"open loop: requests per second (default {DEFAULT_QPS:g} when no --concurrency)")
    concurrency: int | None = option(None, k.positive_int, scenario="arrival.concurrency",
                                     help="closed loop: N users, each sends when its last finished")
    arrival: str = option("poisson", k.choice((*ARRIVAL_KINDS, TRACE)), choices=(*ARRIVAL_KINDS, TRACE),
                          help="open-loop arrivals (default poisson); trace: the dataset's own timestamps")
    burstiness: float = option(1.0, k.positive_float, scenario="arrival.burstiness",
                               help="gamma shape: 1 = Poisson, <1 burstier, >1 smoother (CV = 1/sqrt(burstiness))")
    time_scale: float = option(1.0, k.positive_float, scenario="arrival.time_scale",
                               help="trace replay: multiply trace times by this (0.5 = twice as fast; default 1)")
    num_requests: int | None = option(None, k.positive_int, scenario="num_requests",
                                      help=f"measured requests, or conversations (default {DEFAULT_NUM_REQUESTS} "
                                           "unless --duration)")
    duration: float | None = option(None, k.duration, scenario="duration",
                                    help="stop sending after this long, e.g. 60s or 5m")
    warmup: int | None = option(None, k.nonneg_int, scenario="warmup",
                                help="requests sent first and excluded from the metrics (default 0)")
    timeout: float = option(600.0, k.duration, help="per-request limit, e.g. 30s (default 600s)")
    idle_timeout: float | None = option(None, k.duration, help="fail a request after this long without a byte, "
                                                               "e.g. 30s (default: no limit)")
    stall_timeout: float | None = option(
        60.0, OFF_OR_DURATION,
        help="stop the run early when requests are in flight and no byte arrived on any of them for this long: the "
             "server stalled (default 60s, above any prefill a lone request waits for; 0 or off: never)")
    max_errors: int | None = option(None, k.nonneg_int, help="stop the run early once more than N requests failed "
                                                             "(errors and timeouts)")
    max_error_rate: float | None = option(None, k.fraction,
                                          help="stop the run early once more than this fraction of finished requests "
                                               "failed (checked after 20 requests), e.g. 0.5")
    workers: int | str = option("auto", k.workers,
                                help="client processes that share the load (default auto: one when the server runs on "
                                     "this host, else one per 128 closed-loop users or 100 req/s, at most one per "
                                     "core)")

    def check(self) -> None:
        if self.qps is not None and self.concurrency is not None:
            raise ConfigError("--qps (open loop) and --concurrency (closed loop) exclude each other; give one")
        if self.burstiness != 1.0 and self.arrival != "gamma":
            raise ConfigError("--burstiness applies to --arrival gamma only; add --arrival gamma or drop it")
        if self.arrival == TRACE and (self.qps is not None or self.concurrency is not None):
            raise ConfigError("--arrival trace sends at the trace's timestamps; drop --qps/--concurrency "
                              "(use --time-scale to speed it up)")


@dataclass(frozen=True)
class SloConfig(Section):
    """Service-level objectives: goodput counts the requests that meet every one."""

    limits_ms: dict[str, float] | None = option(None, k.slo, flag="--slo", scenario="slo",
                                                help="goodput objectives, e.g. ttft:500ms,tpot:50ms,e2el:10s")

    @property
    def text(self) -> str | None:
        return k.show_slo(self.limits_ms) if self.limits_ms else None


@dataclass(frozen=True)
class OutputConfig(Section):
    """Where results go and what is printed."""

    dir: str | None = option(None, k.text, flag="--output",
                             help="run directory (default results/<time>-<backend>-<model>)")
    json: bool = option(False, k.switch, action="switch", help="print the summary as JSON to stdout")
    quiet: bool = option(False, k.switch, action="switch", help="no progress bar and no table")
    report: bool = option(False, k.switch, action="switch", help="write report.html at the end (needs matplotlib)")
    csv: bool = option(False, k.switch, action="switch", help="also write requests.csv and summary.csv")


    def check(self) -> None:
        if self.dir:
            _check_output_path(self.dir)


def _check_output_path(path: str) -> None:
    """A name the file system cannot hold is found here, before a server is launched, not as an OSError later."""
    limit = 255
    try:
        limit = os.pathconf(_existing_parent(path), "PC_NAME_MAX")
    except (OSError, ValueError):
        pass
    for part in path.split(os.sep):
        if len(os.fsencode(part)) > limit:
            raise ConfigError(f"--output: the name {part[:24]}... is {len(os.fsencode(part))} bytes, more than the "
                              f"file system's {limit}; choose a shorter --output", "dir")
    if "\0" in path:
        raise ConfigError("--output holds a NUL character; choose another --output", "dir")


def _existing_parent(path: str) -> str:
    here = os.path.abspath(path)
    while not os.path.isdir(here):
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return here


@dataclass(frozen=True)
class TelemetryConfig(Section):
    """What is sampled beside the requests: the server's Prometheus metrics and this host's GPUs."""

    gpu_sampling: bool = option(False, k.switch, action="switch", flag="--gpu-telemetry",
                                help="sample this machine's GPUs with NVML into gpu.jsonl (power, utilisation, memory, "
                                     "clocks) and report energy per output token; for a server on this host")
    gpu_sample_interval: float = option(0.5, k.duration, help="NVML sampling period (default 500ms)")
    scrape_interval: float = option(1.0, k.duration, help="scrape the server's Prometheus /metrics this often into "
                                                          "server_metrics.jsonl (default 1s)")


@dataclass(frozen=True)
class RunConfig:
    """One run: its sections, and the scenario it came from. Sweep points are copies with another load."""

    target: TargetConfig = field(default_factory=TargetConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    slo: SloConfig = field(default_factory=SloConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    scenario_name: str | None = None  # the scenario file's name, recorded in run.json

    def __post_init__(self) -> None:
        if self.load.arrival == TRACE and not self.workload.dataset:
            raise ConfigError("--arrival trace needs --dataset with a CSV trace (Azure or BurstGPT columns)")


RUN_SECTIONS: dict[str, type[Section]] = {"target": TargetConfig, "workload": WorkloadConfig, "load": LoadConfig,
                                          "slo": SloConfig, "output": OutputConfig, "telemetry": TelemetryConfig}
