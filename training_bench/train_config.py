"""What a training run is: `TrainConfig` (method, systems options, shapes), the device defaults it is completed
with, every impossible combination refused with its fix (`check_config`), and the memory it needs
(`memory_estimate_gib`, which the fit check and an out-of-memory error quote)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from scenarios.catalog import get_model
from training_bench import fast_paths, megatron_engine
from training_bench.errors import BenchError
from training_bench.model_build import check_attention, truncated

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GiB = 2**30
PRECISIONS = ("auto", "bf16", "amp", "fp32", "fp8")
ENGINES = ("hf", "megatron")
# Shapes and step counts when none are given: the GPU's are the paper's; the CPU's finish the tiny model in
# seconds (bf16 matmuls run at ~1.2 GFLOP/s on the 2-core CPU the tests run on, fp32 at ~17).
DEFAULTS = {"cuda": {"seq_len": 2048, "micro_batch": 4, "steps": 10, "warmup": 3},
            "cpu": {"seq_len": 128, "micro_batch": 2, "steps": 3, "warmup": 1}}


@dataclass
class TrainConfig:
    model: str = "7b"
    layers: int | None = None
    method: str = "full"  # full, lora, qlora
    seq_len: int | None = None  # None: DEFAULTS for the device
    micro_batch: int | None = None
    grad_accum: int = 1
    steps: int | None = None
    warmup: int | None = None
    attn: str = "sdpa"
    recompute: str = "none"  # none, full
    # auto (bf16 on GPU, fp32 on CPU), bf16 (weights and optimizer state in bf16), amp (fp32 weights, bf16
    # autocast), fp32, fp8 (bf16 weights, torchao float8 decoder linears)
    precision: str = "auto"
    kernels: str = "none"  # none, liger
    compile_scope: str = "layers"  # what --compile compiles: each decoder layer, or the whole model
    engine: str = "hf"  # hf (transformers Llama), megatron (megatron-core GPTModel)
    tp: int = 1  # tensor-parallel degree (megatron engine)
    skip_fit_check: bool = False
    optimizer: str = "adamw"  # adamw (fused where available), adamw8bit (bitsandbytes)
    zero: int = 0  # DeepSpeed ZeRO stage 0 (off), 1, 2, 3
    offload: str = "none"  # none, optimizer, param, both (ZeRO)
    strategy: str = "auto"  # auto, single, ddp, fsdp, deepspeed
    compile: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    # fp32: PEFT's default (autocast_adapter_dtype), adapters upcast from a bf16 base, every LoRA input cast to
    # fp32 in the forward; bf16: adapters in the base's dtype (no casts)
    lora_dtype: str = "fp32"
    lora_targets: tuple[str, ...] = LORA_TARGETS
    bits: int = 4
    device: str = "auto"
    lr: float = 1e-4
    seed: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1


def dist_env() -> Dist:
    return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))


def resolve_defaults(cfg: TrainConfig, device_type: str) -> TrainConfig:
    """The device's shapes and step counts for what the command line left out; precision auto -> bf16 or fp32."""
    defaults = DEFAULTS["cuda" if device_type == "cuda" else "cpu"]
    given = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device_type == "cuda" else "fp32")
    return replace(cfg, **given, precision=precision)


def resolve_strategy(cfg: TrainConfig, dist: Dist) -> str:
    if cfg.strategy != "auto":
        return cfg.strategy
    if cfg.zero:
        return "deepspeed"
    return "ddp" if dist.active else "single"


def check_config(cfg: TrainConfig, device_type: str, dist: Dist) -> str:
    """Every impossible combination, refused before anything is built, with the fix named. Hardware needs come
    before package needs: on a CPU, QLoRA says it needs CUDA whether or not bitsandbytes is installed."""
    if cfg.engine not in ENGINES:
        raise BenchError(f"--engine {cfg.engine}: choose one of {', '.join(ENGINES)}")
    if cfg.precision not in PRECISIONS:
        raise BenchError(f"--precision {cfg.precision}: choose one of {', '.join(PRECISIONS)}")
    fast_paths.check_kernels(cfg.kernels, device_type, cfg.engine)
    if cfg.engine == "megatron":
        megatron_engine.check_megatron(cfg, device_type, dist.world)
    else:
        check_attention(cfg.attn, device_type)
        if cfg.tp != 1:
            raise BenchError("--tp applies to --engine megatron; the HF engine is data parallel (or FSDP/ZeRO)")
    if cfg.precision == "fp8" and cfg.method != "full":
        raise BenchError(f"--precision fp8 with --method {cfg.method}: float8 training here converts the full "
                         "model's linears; LoRA adapters sit on them, use --precision bf16")
    if cfg.precision == "fp8" and (cfg.zero or cfg.strategy == "deepspeed"):
        raise BenchError("--precision fp8 with DeepSpeed is not supported here; use FSDP2 (--strategy fsdp)")
    if cfg.compile and cfg.compile_scope not in fast_paths.COMPILE_SCOPES:
        raise BenchError(f"--compile-scope {cfg.compile_scope}: choose one of {', '.join(fast_paths.COMPILE_SCOPES)}")
    strategy = "single" if cfg.engine == "megatron" and not dist.active else (
        "megatron" if cfg.engine == "megatron" else resolve_strategy(cfg, dist))
    if cfg.method not in ("full", "lora", "qlora"):
        raise BenchError(f"--method {cfg.method}: choose full, lora or qlora")
    if cfg.recompute not in ("none", "full"):
        raise BenchError(f"--recompute {cfg.recompute}: the transformers Llama supports none or full "
                         "(selective recomputation needs a model that checkpoints only attention)")
    for name in ("seq_len", "micro_batch", "grad_accum", "steps"):
        if getattr(cfg, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.method == "qlora" or cfg.optimizer == "adamw8bit":
        what = "--method qlora" if cfg.method == "qlora" else "--optimizer adamw8bit"
        if device_type != "cuda":
            raise BenchError(f"{what} needs a CUDA GPU (bitsandbytes' 4-bit and 8-bit kernels); on CPU use "
                             "--method lora / --optimizer adamw")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise BenchError(f"{what} needs bitsandbytes; install it with pip install 'dissect[quant]'") from None
    if cfg.method == "qlora" and cfg.bits not in (4,):
        raise BenchError(f"--bits {cfg.bits}: QLoRA quantizes the base to 4-bit NF4; give --bits 4")
    if cfg.zero or strategy == "deepspeed":
        if cfg.zero not in (1, 2, 3):
            raise BenchError("--strategy deepspeed needs --zero 1, 2 or 3")
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise BenchError(f"--zero {cfg.zero} uses DeepSpeed; install it with pip install 'dissect[deepspeed]', "
                             "or use --strategy fsdp (PyTorch-native sharding)") from None
        if device_type != "cuda":
            raise BenchError("DeepSpeed ZeRO runs on CUDA GPUs; on CPU use --strategy ddp or fsdp under torchrun")
        if cfg.method == "qlora":
            raise BenchError("--method qlora with --zero is not supported here; QLoRA fits one GPU, use it alone")
        if cfg.optimizer == "adamw8bit":
            raise BenchError("--optimizer adamw8bit replaces the optimizer ZeRO shards; use one or the other")
    if cfg.offload != "none":
        if not cfg.zero:
            raise BenchError("--offload needs DeepSpeed ZeRO: add --zero 2 (optimizer) or --zero 3 (param)")
        if cfg.offload in ("param", "both") and cfg.zero != 3:
            raise BenchError("--offload param needs --zero 3 (only stage 3 partitions parameters)")
    if strategy == "fsdp":
        if not dist.active and device_type != "cuda":
            raise BenchError("--strategy fsdp on CPU needs several processes: run it under "
                             "torchrun --nproc-per-node 2 (one CPU process has nothing to shard with)")
        if cfg.method == "qlora":
            raise BenchError("--strategy fsdp with --method qlora is not supported here; run QLoRA on one GPU")
    if strategy == "ddp" and not dist.active:
        raise BenchError("--strategy ddp needs several processes: run under torchrun --nproc-per-node N")
    if cfg.compile and cfg.attn.startswith("sdpa-"):
        raise BenchError(f"--compile with --attn {cfg.attn}: torch.compile cannot trace a restricted SDPA backend "
                         "(seen on the H100 with sdpa-flash); use --compile --attn sdpa (PyTorch picks the kernel)")
    if cfg.precision == "fp32" and cfg.zero:
        raise BenchError("--precision fp32 with DeepSpeed: the ZeRO config here trains in bf16; use --precision bf16")
    return strategy


def memory_estimate_gib(cfg: TrainConfig) -> dict[str, float]:
    """What a run needs on one device, roughly: the figures the fit check and an out-of-memory error quote.
    Shapes the config leaves out are the GPU defaults; precision auto counts as bf16."""
    spec = truncated(get_model(cfg.model), cfg.layers)
    seq_len = cfg.seq_len or DEFAULTS["cuda"]["seq_len"]
    micro_batch = cfg.micro_batch or DEFAULTS["cuda"]["micro_batch"]
    wide = cfg.precision in ("amp", "fp32")  # fp32 weights, gradients and Adam state
    n = spec.param_count
    wbytes = 0.5 if cfg.method == "qlora" else (4 if wide else 2)
    trainable = n if cfg.method == "full" else 2 * cfg.lora_rank * spec.num_layers * 7 * spec.hidden_size
    grad = trainable * (4 if wide else 2)
    opt_per = 2 if cfg.optimizer == "adamw8bit" else (8 if wide else 4)
    opt = 0 if cfg.offload in ("optimizer", "both") else trainable * opt_per
    tokens = micro_batch * seq_len
    # per layer and token without recomputation: measured on the H100 with the transformers Llama, ~45*h bytes for
    # full training (Korthikanti et al. count 34*h for a fused implementation) and ~65*h with LoRA (peft keeps the
    # adapters in fp32, so each adapted layer saves an fp32 copy of its input); with full recomputation only each
    # layer's input (2*h bytes). fp32 activations (precision fp32) take twice the bytes. Eager attention adds the
    # score matrices; the logits are kept in fp32 for the loss unless liger's fused linear cross-entropy is on.
    act_scale = 2 if cfg.precision == "fp32" else 1
    if cfg.recompute == "full":
        per_layer = 2 * spec.hidden_size
    else:
        per_layer = (45 if cfg.method == "full" else 65) * spec.hidden_size
    logits = 0 if cfg.kernels == "liger" else tokens * spec.vocab_size * 4
    act = tokens * spec.num_layers * per_layer * act_scale + logits
    if cfg.attn == "eager" and cfg.recompute != "full":
        act += micro_batch * spec.num_heads * seq_len**2 * 2 * act_scale * spec.num_layers
    return {"weights": n * wbytes / GiB, "gradients": grad / GiB, "optimizer": opt / GiB, "activations": act / GiB}
