"""What the simulated engine stands for (model, GPU, TP, limits) and how each step is costed: the roofline, a
measured profile, or fixed timing."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.errors import BackendError
from backends.sim.profile_cost import Profile
from backends.sim.roofline import EngineCostParams, IterationCost, SeqWork, iteration_cost, memory_plan
from scenarios.catalog import GPUSpec, ModelSpec, get_gpu, get_model


@dataclass
class SimConfig:
    model: ModelSpec
    gpu: GPUSpec
    tp: int = 1
    served_model_name: str | None = None
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    cost: EngineCostParams = field(default_factory=EngineCostParams)
    profile: Profile | None = None
    # Fixed timing instead of the engine model: first token `fixed_ttft_s` after arrival, then one every
    # `fixed_itl_s`, per request and regardless of load -- a target whose ground truth is known exactly, for
    # measuring a load generator's own limits (benchmarks/loadgen_capacity.py).
    fixed_ttft_s: float | None = None
    fixed_itl_s: float | None = None

    @property
    def fixed(self) -> bool:
        return self.fixed_ttft_s is not None or self.fixed_itl_s is not None

    @property
    def name(self) -> str:
        return self.served_model_name or self.model.name

    @property
    def cost_model(self) -> str:
        if self.fixed:
            return (f"fixed timing: TTFT {(self.fixed_ttft_s or 0) * 1e3:g} ms, then a token every "
                    f"{(self.fixed_itl_s or 0) * 1e3:g} ms per request, independent of load (no engine model)")
        if self.profile is not None:
            return self.profile.describe(self.model)
        return (f"roofline from catalog datasheet peaks ({self.gpu.name}: {self.gpu.peak_bf16_tflops:g} TFLOP/s, "
                f"{self.gpu.hbm_bandwidth_gbs:g} GB/s) with documented efficiencies")

    @property
    def warnings(self) -> list[str]:
        """What a user must know before trusting these timings (printed at start, kept in summary.json)."""
        mismatch = self.profile.device_mismatch(self.gpu) if self.profile is not None and not self.fixed else None
        return [mismatch] if mismatch else []

    def step_cost(self, work: list[SeqWork]) -> IterationCost:
        if self.profile is not None:
            return self.profile.iteration_cost(self.model, self.gpu, self.tp, work, self.cost)
        return iteration_cost(self.model, self.gpu, self.tp, work, self.cost)


def build_config(model: str, gpu: str, tp: int, profile: str | None = None, **kwargs) -> SimConfig:
    """Resolve catalog names and check the model fits; raises BackendError/CatalogError for user mistakes."""
    config = SimConfig(model=get_model(model), gpu=get_gpu(gpu), tp=tp,
                       profile=Profile.load(profile) if profile else None, **kwargs)
    if tp < 1:
        raise BackendError(f"--gpus must be at least 1, got {tp}")
    try:
        plan = memory_plan(config.model, config.gpu, tp, config.gpu_memory_utilization)
    except ValueError as exc:
        raise BackendError(str(exc)) from None
    if plan.kv_capacity_tokens < config.model.max_context:
        raise BackendError(
            f"{config.model.name} on {tp}x {config.gpu.key} leaves KV-cache room for {plan.kv_capacity_tokens} "
            f"tokens, less than one {config.model.max_context}-token sequence; use more GPUs or a larger GPU"
        )
    return config
