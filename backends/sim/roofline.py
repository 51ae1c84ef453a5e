"""Per-iteration time of an LLM engine step from a roofline of FLOPs and bytes, plus tensor-parallel all-reduce.

Pure functions, so the simulated engine's timing can be unit-tested against hand-computed values.
Constants that are not datasheet figures (efficiencies, fixed overheads) live in `EngineCostParams`
with their defaults documented: each says whether it was measured or fitted, and on what
(benchmarks/sim_validation.py fits; results/README.md keeps the calibration history).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from scenarios.catalog import BF16_BYTES, GPUSpec, ModelSpec


@dataclass(frozen=True)
class EngineCostParams:
    # Fraction of datasheet HBM bandwidth a weight-streaming decode achieves (a D2D copy reaches ~0.89 on H100).
    memory_efficiency: float = 0.9
    # Fraction of datasheet dense bf16 peak that large serving GEMMs achieve (8192^3 GEMM: ~0.79 on H100).
    compute_efficiency: float = 0.7
    # GPU time every step pays beyond its FLOPs and bytes: sampling, small kernels, gaps between graph pieces.
    # Fitted, with request_overhead_s, to vLLM 0.22.0 on an H100 (Llama-2-7B shape, 512 in / 128 out) on its
    # closed loop of one user, where TPOT is one decode step and TTFT one lone prefill plus the request latency
    # (benchmarks/sim_validation.py on runs without min_tokens: results/h100-sim-validation-fixed-pinned.json has
    # every other point's error).
    step_overhead_s: float = 1.5e-3
    # Latency from a request's arrival to the engine's intake plus its first token's way back to the client (HTTP,
    # tokenization, the engine's input and output hops); fitted as above.
    request_overhead_s: float = 11e-3
    # Fraction of datasheet HBM bandwidth decode attention achieves reading the paged KV cache: lower than a
    # weight stream's (many short sequences, block tables). Measured, not fitted: the micro-benchmark's decode
    # attention read 8 x 2,048 KV tokens at 0.70 and 32 x 2,048 at 0.77 of the H100's datasheet bandwidth
    # (results/h100-profile-7b.json, attention_decode).
    kv_memory_efficiency: float = 0.7
    # The engine's CPU thread schedules a step and launches its kernels while the GPU still runs the step before
    # (vLLM's asynchronous scheduling), so this time is hidden behind the GPU unless it is the longer of the two.
    # Measured, not fitted, inside vLLM 0.22.0's engine core on the H100 (benchmarks/vllm_serving.py --step-trace;
    # results/h100-vllm-step-trace.json, 36,505 steps; its launch_fits). Means, not medians: the sim charges each step one fixed
    # time, and what queues behind a step is its mean. A decode-only step (one CUDA graph replay) took
    # 2.04 ms + 0.040 ms per sequence from the start of scheduling to the end of its launch, and processing its
    # output 0.15 ms more.
    launch_s: float = 2.2e-3
    launch_per_seq_s: float = 0.04e-3
    # A step holding a prefill runs on piecewise graphs: attention is launched from Python between the graph's
    # pieces, per layer. Measured as above: a lone 512-token prefill's launch took 9.26 ms and its output 0.09 ms
    # ((9.35 - 2.24) / 32 layers).
    piecewise_layer_s: float = 0.22e-3
    # Steps of more tokens than this replay no graph (vLLM's default capture sizes end at min(2 x max_num_seqs,
    # 512)): every kernel is launched one by one. A 512-token prefill beside one decode is 513 tokens: off the
    # graph.
    cuda_graph_max_tokens: int = 512
    # CPU time to launch a step off the graph: per decoder layer, and per sequence on top of launch_per_seq_s.
    # Measured as above: 1,565 such steps took 16.93 ms + 0.244 ms per sequence, their output 0.22 ms
    # ((16.93 + 0.22 - 2.2) / 32 layers; 0.244 - 0.04 per sequence). 0 turns them off.
    eager_layer_overhead_s: float = 0.47e-3
    eager_launch_per_seq_s: float = 0.2e-3
    # The front end (API server: detokenising, SSE, HTTP) as one first-in-first-out worker: each streamed token
    # costs it this long; a step's tokens reach the client once it has processed them, and a new request's intake
    # waits behind them. Measured, not fitted: on the H100 the tokens of one engine step reached loadgen spread over
    # 0.039 / 0.058 / 0.084 ms per token at 4 / 8 / 16 req/s, after the engine's output (the step trace's times on
    # the clock loadgen shares), and the first of them 1.0 / 1.2 / 2.1 ms after it. 0 turns it off.
    frontend_token_s: float = 0.06e-3
    # A busy engine schedules a new request this many step boundaries later than the next one. Off: the model it
    # belongs to (one-step-ahead scheduling) fits vLLM worse (results/README.md); kept so that
    # `benchmarks/sim_validation.py --lag` can still fit and compare it.
    scheduling_lag_steps: int = 0
    # Latency of one small all-reduce between GPUs (NVLink, custom all-reduce kernels).
    allreduce_latency_s: float = 8e-6
    dtype_bytes: int = BF16_BYTES


def _launch_rates(work: "list[SeqWork]", params: EngineCostParams) -> tuple[float, float]:
    """(CPU time per sequence, per decoder layer) of a step's launch: one graph replay for a decode-only step,
    attention launched per layer between graph pieces for a step holding a prefill, every kernel per layer for a
    step too large for a captured graph."""
    if sum(w.new_tokens for w in work) > params.cuda_graph_max_tokens:
        return params.launch_per_seq_s + params.eager_launch_per_seq_s, params.eager_layer_overhead_s
    if any(w.new_tokens > 1 for w in work):
        return params.launch_per_seq_s, params.piecewise_layer_s
    return params.launch_per_seq_s, 0.0


def launch_seconds(model: ModelSpec, work: "list[SeqWork]", params: EngineCostParams) -> float:
    """CPU time to schedule and launch one step (see _launch_rates)."""
    if sum(w.new_tokens for w in work) == 0:
        return 0.0
    per_seq, per_layer = _launch_rates(work, params)
    return params.launch_s + per_seq * len(work) + model.num_layers * per_layer


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
    # The CPU side (see launch_seconds) and, for a step launched layer by layer, the GPU time left after its last
    # launch (one layer's share): such a step cannot finish sooner than that after its launches end.
    launch_s: float = 0.0
    tail_s: float = 0.0

    @property
    def seconds(self) -> float:
        """The GPU's time for the step."""
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
    work = list(work)
    for w in work:
        tokens += w.new_tokens
        logits += 1 if w.emits_token else 0
        attn += attention_flops(model, w.new_tokens, w.context)
        kv_tokens_touched += w.context + w.new_tokens  # read all cached K/V, write the new ones
    if tokens == 0:
        return IterationCost(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    layer_matmul_params = model.num_layers * model.layer_params
    flops = 2.0 * layer_matmul_params * tokens + 2.0 * model.vocab_size * model.hidden_size * logits + attn
    weight_bytes = model.matmul_params * params.dtype_bytes / tp
    kv_bytes = kv_tokens_touched * model.kv_bytes_per_token(params.dtype_bytes) / tp
    bytes_per_gpu = weight_bytes + kv_bytes
    compute_s = flops / (tp * gpu.peak_flops * params.compute_efficiency)
    memory_s = (weight_bytes / params.memory_efficiency + kv_bytes / params.kv_memory_efficiency) / gpu.hbm_bandwidth
    comm_s = 0.0
    if tp > 1:
        # Two all-reduces per layer (after attention and after the MLP) of the hidden states; ring algorithm.
        message = tokens * model.hidden_size * params.dtype_bytes
        per_allreduce = params.allreduce_latency_s + 2 * (tp - 1) / tp * message / gpu.interconnect_bandwidth
        comm_s = 2 * model.num_layers * per_allreduce
    return with_launch(IterationCost(flops, bytes_per_gpu, compute_s, memory_s, comm_s, params.step_overhead_s),
                       model, work, params)


def with_launch(cost: IterationCost, model: ModelSpec, work: "list[SeqWork]", params: EngineCostParams) -> IterationCost:
    """The step's CPU side added to a GPU-side cost (the roofline's or a measured profile's)."""
    layered = _launch_rates(work, params)[1] > 0
    return replace(cost, launch_s=launch_seconds(model, work, params),
                   tail_s=cost.seconds / model.num_layers if layered else 0.0)


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
