"""What a RunConfig makes for the run: its load plan and its workload (which needs the endpoint's context and
the tokenizer, so it is built once the server is known)."""

from __future__ import annotations

from loadgen.config.run import DEFAULT_NUM_REQUESTS, DEFAULT_QPS, TRACE, RunConfig
from loadgen.errors import LoadgenError
from loadgen.load.arrivals import ArrivalProcess
from loadgen.load.plans import LoadPlan
from loadgen.workload.datasets import Dataset, load_dataset
from loadgen.workload.prompts import PromptSynthesizer
from loadgen.workload.specs import DatasetWorkload, Workload
from scenarios.scenario import find_data_file

TRACE_FORMATS = ("azure", "burstgpt")


def load_plan(config: RunConfig) -> LoadPlan:
    """The load of one run (a sweep point is a RunConfig whose load is that point's)."""
    load = config.load
    num = load.num_requests
    if num is None and load.duration is None and load.arrival != TRACE:
        num = DEFAULT_NUM_REQUESTS
    common = dict(num_requests=num, duration_s=load.duration, warmup=load.warmup or 0, timeout_s=load.timeout,
                  seed=config.workload.seed, idle_timeout_s=load.idle_timeout, max_errors=load.max_errors,
                  max_error_rate=load.max_error_rate, stall_timeout_s=load.stall_timeout)
    if load.arrival == TRACE:
        return LoadPlan(trace_time_scale=load.time_scale, **common)
    if load.concurrency is not None:
        return LoadPlan(concurrency=load.concurrency, **common)
    qps = load.qps if load.qps is not None else DEFAULT_QPS
    return LoadPlan(arrival=ArrivalProcess(load.arrival, qps, load.burstiness), **common)


def read_dataset(config: RunConfig, tokenizer) -> Dataset | None:
    """The run's dataset, read and checked before a server is launched (a missing file or a broken trace is
    found in a second, not after a framework's 30-minute start)."""
    w = config.workload
    if not w.dataset:
        return None
    dataset = load_dataset(find_data_file(w.dataset), w.dataset_format, tokenizer.count if tokenizer else None)
    if w.multi_turn and dataset.format != "sharegpt":
        raise LoadgenError("--multi-turn needs a conversation dataset (ShareGPT or messages format)")
    if config.load.arrival == TRACE and dataset.format not in TRACE_FORMATS:
        raise LoadgenError(f"--arrival trace needs a CSV trace, but {w.dataset} is a {dataset.format} dataset")
    return dataset


def build_workload(config: RunConfig, max_context: int, tokenizer,
                   dataset: Dataset | None = None, stream: int = 0) -> Workload | DatasetWorkload:
    """`dataset`: the one read_dataset gave (read here when not given); `stream`: a sweep point's own text."""
    w = config.workload
    synth = PromptSynthesizer(tokenizer)
    if w.dataset:
        dataset = dataset if dataset is not None else read_dataset(config, tokenizer)
        return DatasetWorkload(dataset, max_context, synth, w.seed, multi_turn=w.multi_turn, stream=stream)
    return Workload(w.input_len, w.output_len, max_context, synth, w.seed, prefix_groups=w.prefix_groups,
                    prefix_len=w.prefix_len, turns=w.turns, stream=stream)
