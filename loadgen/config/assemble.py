"""What a RunConfig makes for the run: its load plan and its workload (which needs the endpoint's context and
the tokenizer, so it is built once the server is known)."""

from __future__ import annotations

from loadgen.config.run import DEFAULT_NUM_REQUESTS, DEFAULT_QPS, TRACE, RunConfig
from loadgen.errors import LoadgenError
from loadgen.load.arrivals import ArrivalProcess
from loadgen.load.plans import LoadPlan
from loadgen.workload.datasets import load_dataset
from loadgen.workload.prompts import PromptSynthesizer
from loadgen.workload.specs import DatasetWorkload, Workload
from scenarios.scenario import find_data_file


def load_plan(config: RunConfig) -> LoadPlan:
    """The load of one run (a sweep point is a RunConfig whose load is that point's)."""
    load = config.load
    num = load.num_requests
    if num is None and load.duration is None and load.arrival != TRACE:
        num = DEFAULT_NUM_REQUESTS
    common = dict(num_requests=num, duration_s=load.duration, warmup=load.warmup or 0, timeout_s=load.timeout,
                  seed=config.workload.seed, idle_timeout_s=load.idle_timeout, max_errors=load.max_errors,
                  max_error_rate=load.max_error_rate)
    if load.arrival == TRACE:
        return LoadPlan(trace_time_scale=load.time_scale, **common)
    if load.concurrency is not None:
        return LoadPlan(concurrency=load.concurrency, **common)
    qps = load.qps if load.qps is not None else DEFAULT_QPS
    return LoadPlan(arrival=ArrivalProcess(load.arrival, qps, load.burstiness), **common)


def build_workload(config: RunConfig, max_context: int, tokenizer) -> Workload | DatasetWorkload:
    w = config.workload
    synth = PromptSynthesizer(tokenizer)
    if w.dataset:
        dataset = load_dataset(find_data_file(w.dataset), w.dataset_format, tokenizer.count if tokenizer else None)
        workload = DatasetWorkload(dataset, max_context, synth, w.seed, multi_turn=w.multi_turn)
        if config.load.arrival == TRACE and not workload.is_trace:
            raise LoadgenError(f"--arrival trace needs a CSV trace, but {w.dataset} is a {dataset.format} dataset")
        return workload
    return Workload(w.input_len, w.output_len, max_context, synth, w.seed, prefix_groups=w.prefix_groups,
                    prefix_len=w.prefix_len, turns=w.turns)
