"""Per-iteration time of an LLM engine step from a roofline of FLOPs and bytes, plus tensor-parallel all-reduce.

Pure functions, so the simulated engine's timing can be unit-tested against hand-computed values.
Constants that are not datasheet figures (efficiencies, fixed overheads) live in `EngineCostParams`
with their defaults documented; issue 12 fits them to a measured engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from scenarios.catalog import BF16_BYTES, GPUSpec, ModelSpec


@dataclass(frozen=True)
class EngineCostParams:
    # Fraction of datasheet HBM bandwidth a weight-streaming decode achieves (a D2D copy reaches ~0.89 on H100).
    memory_efficiency: float = 0.9
    # Fraction of datasheet dense bf16 peak that large serving GEMMs achieve (8192^3 GEMM: ~0.79 on H100).
    compute_efficiency: float = 0.7
    # Fixed cost per engine iteration: scheduling, sampling, kernel launches with CUDA graphs. Fitted, with
    # request_overhead_s, to vLLM 0.22.0 on an H100 (Llama-2-7B shape, 512 in / 128 out) on its closed loop of
    # one user, where TPOT is one decode step and TTFT one lone prefill plus this latency
    # (benchmarks/sim_validation.py; results/h100-sim-validation-paired.json has every other point's error).
    step_overhead_s: float = 1.7e-3
    # Latency from a request's arrival to its first chance of being scheduled (HTTP, tokenization, the engine's
    # input and output hops); fitted as above.
    request_overhead_s: float = 10e-3
    # The engine plans step k+1 while step k runs (vLLM's scheduler works one step ahead), so a request that
    # arrives while the engine is busy is first scheduled this many steps after the next step boundary; an idle
    # engine takes it at once. 0 turns it off. Structural, not fitted: vLLM's per-request phases show the
    # difference (results/h100-vllm-serving-*.json: a request arriving beside one running request waits ~1 step
    # longer than one arriving at an idle engine).
    scheduling_lag_steps: int = 0
    # The front end (API server: detokenising, SSE, HTTP) as one first-in-first-out worker: each streamed token
    # costs it this long; a step's tokens reach the client once it has processed them, and a new request's intake
    # waits behind them. This is what makes TTFT grow with the token rate. 0 turns it off.
    frontend_token_s: float = 0.0
    # Steps of at most this many tokens replay a captured CUDA graph; larger ones launch every kernel one by one
    # (vLLM's default capture sizes end at min(2 x max_num_seqs, 512)). A 512-token prefill beside one decode is
    # 513 tokens: off the graph.
    cuda_graph_max_tokens: int = 512
    # What a step off the graph costs on top, per decoder layer: the launches a graph would have replayed.
    # Measured, not fitted: vLLM 0.22.0 on the H100 (Llama-2-7B, 32 layers) decoded at 6.9 ms per token with
    # CUDA graphs and about 20 ms with --enforce-eager at 4 req/s (shared/GPU-NOTES.md): 13.1 ms / 32 layers.
    # The token timestamps of results/h100-vllm-serving-*.json show the same cliff: a step carrying one
    # 512-token prefill and one decode takes 20-26 ms, a 512-token prefill alone ~11 ms, a decode step ~6 ms;
    # with graphs captured up to 1,024 tokens that step took ~11 ms and vLLM's TTFT under load fell 15-25%
    # (results/h100-vllm-serving-graph1024.json). 0 turns it off.
    eager_layer_overhead_s: float = 0.41e-3
    # Latency of one small all-reduce between GPUs (NVLink, custom all-reduce kernels).
    allreduce_latency_s: float = 8e-6
    dtype_bytes: int = BF16_BYTES


def step_overhead_s(model: ModelSpec, tokens: int, params: EngineCostParams) -> float:
    """Fixed cost of one engine iteration of `tokens` tokens: the per-step cost, plus the kernel launches of a
    step too large for a captured CUDA graph."""
    eager = model.num_layers * params.eager_layer_overhead_s if tokens > params.cuda_graph_max_tokens else 0.0
    return params.step_overhead_s + eager


@dataclass(frozen=True)
class SeqWork:
    """One sequence's share of an iteration: `new_tokens` computed on top of `context` already cached."""

    new_tokens: int
    context: int
    emits_token: bool  # produces logits this step (decode, or the chunk that completes its prefill)


@dataclass(frozen=True)
class IterationCost:
    flops: float
    bytes_per_gpu: float
    compute_s: float
    memory_s: float
    comm_s: float
    overhead_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s) + self.comm_s + self.overhead_s


def attention_flops(model: ModelSpec, new_tokens: int, context: int) -> float:
    """QK^T and PV FLOPs over all layers for `new_tokens` queries attending causally to context + themselves."""
    # Query i (0-based within the chunk) sees context + i + 1 keys; summed: q*context + q*(q+1)/2.
    keys_seen = new_tokens * context + new_tokens * (new_tokens + 1) / 2
    return 4.0 * model.num_layers * model.num_heads * model.head_dim * keys_seen


def iteration_cost(
    model: ModelSpec,
    gpu: GPUSpec,
    tp: int,
    work: Iterable[SeqWork],
    params: EngineCostParams = EngineCostParams(),
) -> IterationCost:
    tokens = 0
    logits = 0
    attn = 0.0
    kv_tokens_touched = 0
    for w in work:
        tokens += w.new_tokens
        logits += 1 if w.emits_token else 0
        attn += attention_flops(model, w.new_tokens, w.context)
        kv_tokens_touched += w.context + w.new_tokens  # read all cached K/V, write the new ones
    if tokens == 0:
        return IterationCost(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    layer_matmul_params = model.num_layers * model.layer_params
    flops = 2.0 * layer_matmul_params * tokens + 2.0 * model.vocab_size * model.hidden_size * logits + attn
    weight_bytes = model.matmul_params * params.dtype_bytes
    kv_bytes = kv_tokens_touched * model.kv_bytes_per_token(params.dtype_bytes)
    bytes_per_gpu = (weight_bytes + kv_bytes) / tp
    compute_s = flops / (tp * gpu.peak_flops * params.compute_efficiency)
    memory_s = bytes_per_gpu / (gpu.hbm_bandwidth * params.memory_efficiency)
    comm_s = 0.0
    if tp > 1:
        # Two all-reduces per layer (after attention and after the MLP) of the hidden states; ring algorithm.
        message = tokens * model.hidden_size * params.dtype_bytes
        per_allreduce = params.allreduce_latency_s + 2 * (tp - 1) / tp * message / gpu.interconnect_bandwidth
        comm_s = 2 * model.num_layers * per_allreduce
    return IterationCost(flops, bytes_per_gpu, compute_s, memory_s, comm_s, step_overhead_s(model, tokens, params))


@dataclass(frozen=True)
class MemoryPlan:
    weight_bytes_per_gpu: float
    kv_bytes_total: float
    kv_capacity_tokens: int


def memory_plan(
    model: ModelSpec,
    gpu: GPUSpec,
    tp: int,
    gpu_memory_utilization: float = 0.9,
    reserve_gib_per_gpu: float = 2.0,
    dtype_bytes: int = BF16_BYTES,
) -> MemoryPlan:
    """KV-cache capacity the way vLLM sizes it: a fraction of device memory minus weights and a working reserve.

    Raises ValueError when the weights alone do not fit, with the numbers needed to choose more GPUs.
    """
    weights_per_gpu = model.weight_bytes(dtype_bytes) / tp
    usable = gpu.memory_bytes * gpu_memory_utilization - reserve_gib_per_gpu * 2**30
    free_per_gpu = usable - weights_per_gpu
    if free_per_gpu <= 0:
        raise ValueError(
            f"{model.name} needs {weights_per_gpu / 2**30:.1f} GiB of weights per GPU with {tp} GPU(s) but a "
            f"{gpu.key} offers {usable / 2**30:.1f} GiB usable; use more GPUs (--gpus) or a larger GPU (--gpu)"
        )
    kv_total = free_per_gpu * tp
    return MemoryPlan(weights_per_gpu, kv_total, int(kv_total // model.kv_bytes_per_token(dtype_bytes)))
