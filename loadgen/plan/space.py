"""The search space of `loadgen plan` and the rules that make a configuration impossible before anything is
simulated: tensor parallelism that does not split the model's heads, weights or a longest request that do not fit in
memory, engine limits vLLM itself refuses."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from backends.sim.roofline import memory_plan
from scenarios.catalog import GPUSpec, ModelSpec

# One NVLink domain: the roofline's all-reduce model is one node's interconnect; TP across nodes is not modelled.
MAX_TP = 8
BLOCK_SIZE = 16  # the sim's (and vLLM's default) KV-cache block in tokens


@dataclass(frozen=True)
class EngineConfig:
    """One engine (one replica): what the simulated engine is replayed with."""

    gpu: str  # catalog key
    tp: int
    max_num_seqs: int
    max_batched_tokens: int

    @property
    def label(self) -> str:
        return f"{self.gpu} TP{self.tp} seqs {self.max_num_seqs} tokens {self.max_batched_tokens}"


@dataclass(frozen=True)
class Candidate:
    """A deployment: `replicas` copies of one engine behind a load balancer."""

    engine: EngineConfig
    replicas: int

    @property
    def gpus(self) -> int:
        return self.engine.tp * self.replicas


@dataclass(frozen=True)
class SearchSpace:
    gpus: tuple[GPUSpec, ...]
    tp: tuple[int, ...]
    max_num_seqs: tuple[int, ...]
    max_batched_tokens: tuple[int, ...]
    max_gpus: int
    replicas: tuple[int, ...] | None = None  # None: every count that fits max_gpus

    def engines(self) -> list[EngineConfig]:
        return [EngineConfig(g.key, tp, s, b) for g, tp, s, b in
                itertools.product(self.gpus, self.tp, self.max_num_seqs, self.max_batched_tokens)]

    def replica_counts(self, tp: int) -> list[int]:
        counts = self.replicas if self.replicas is not None else range(1, self.max_gpus // tp + 1)
        return [r for r in counts if r * tp <= self.max_gpus]

    def candidates(self) -> list[Candidate]:
        return [Candidate(e, r) for e in self.engines() for r in self.replica_counts(e.tp)]


@dataclass(frozen=True)
class MemoryFacts:
    """KV-cache capacity as vLLM sizes it and the concurrency at which the engine starts preempting."""

    weights_gib_per_gpu: float
    kv_gib_total: float
    kv_capacity_tokens: int
    kv_blocks: int
    blocks_per_request: float  # the workload's mean prompt + output, in KV blocks
    # Sequences of the workload's mean length that fit at once at their full length: the scheduler preempts once
    # more than this many run near their end. None when max_num_seqs caps concurrency below it (never preempts on
    # average; a long-tailed workload may still preempt on its longest requests).
    preemption_above_seqs: int | None
    fits_at_full_length: int


def memory_facts(model: ModelSpec, gpu: GPUSpec, tp: int, max_num_seqs: int, mean_total_tokens: float,
                 gpu_memory_utilization: float = 0.9) -> MemoryFacts:
    """Raises ValueError (memory_plan's) when the weights alone do not fit."""
    plan = memory_plan(model, gpu, tp, gpu_memory_utilization)
    blocks = plan.kv_capacity_tokens // BLOCK_SIZE
    per_request = -(-mean_total_tokens // BLOCK_SIZE)
    fits = int(blocks // per_request) if per_request else blocks
    return MemoryFacts(plan.weight_bytes_per_gpu / 2**30, plan.kv_bytes_total / 2**30, plan.kv_capacity_tokens,
                       blocks, float(per_request), fits if fits < max_num_seqs else None, fits)


def infeasible_reason(model: ModelSpec, gpu: GPUSpec, engine: EngineConfig, longest_request: int,
                      max_model_len: int) -> str | None:
    """Why this engine cannot run (the first rule it breaks), or None."""
    tp = engine.tp
    if tp > MAX_TP:
        return f"TP {tp} spans more than one {MAX_TP}-GPU NVLink node (not modelled)"
    if model.num_heads % tp:
        return f"TP {tp} does not divide the model's {model.num_heads} attention heads"
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        return f"TP {tp} neither divides nor is a multiple of the model's {model.num_kv_heads} KV heads"
    if engine.max_batched_tokens < engine.max_num_seqs:
        return (f"max batched tokens {engine.max_batched_tokens} below max_num_seqs {engine.max_num_seqs} "
                "(vLLM refuses it)")
    try:
        plan = memory_plan(model, gpu, tp)
    except ValueError:
        usable = gpu.memory_bytes * 0.9 / 2**30 - 2.0
        return (f"does not fit in memory: {model.weight_bytes() / tp / 2**30:.1f} GiB of weights per GPU, "
                f"{usable:.1f} GiB usable")
    need = max(max_model_len, longest_request)
    if plan.kv_capacity_tokens < need:
        return (f"KV cache holds {plan.kv_capacity_tokens} tokens, less than one {need}-token sequence "
                f"({'max_model_len' if need == max_model_len else 'the longest request'})")
    return None
