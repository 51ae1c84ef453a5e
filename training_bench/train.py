"""Pre-training and fine-tuning runs: a real model, real optimizer steps, timed phase by phase.

One `TrainConfig` describes a run (method, systems options, shapes); `run_training` builds everything, runs the
warm-up and timed steps, and returns a JSON-ready result: tokens/s, model TFLOP/s and MFU with the FLOP formula,
forward/backward/optimizer times, and peak memory with its split. Under torchrun every rank runs the same loop;
rank 0 reports totals (tokens/s over all ranks, the slowest rank's step time).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace

from scenarios.catalog import get_model, gpu_for_device
from training_bench import fast_paths, megatron_engine
from training_bench.devices import pick_device
from training_bench.errors import BenchError
from training_bench.flops import training_flops_per_token
from training_bench.memory_fit import available_bytes, check_fits, shard_factors
from training_bench.model_build import attention_context, build_model, check_attention, enable_recompute, truncated

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


def _init_process_group(device, dist: Dist, strategy: str, engine: str = "hf") -> None:
    import torch.distributed as tdist

    if tdist.is_initialized():
        return
    if strategy == "deepspeed":
        import deepspeed

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        deepspeed.init_distributed(dist_backend="nccl")
        return
    if dist.active or strategy == "fsdp" or engine == "megatron":
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=dist.rank, world_size=dist.world)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantize_base_nf4(model, compute_dtype) -> int:
    """Replace every decoder Linear with a bitsandbytes 4-bit NF4 Linear (frozen): QLoRA's base. Returns how many."""
    import bitsandbytes as bnb
    import torch

    count = 0
    for parent_name, parent in list(model.named_modules()):
        if ".layers." not in f".{parent_name}.":
            continue
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            device = child.weight.device
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=compute_dtype, quant_type="nf4", device="meta")
            q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4").to(device)
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, q)
            del child
            count += 1
    return count


def apply_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets),
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _tensor_bytes(t) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def _optimizer_state_bytes(optimizer, device) -> int:
    total = 0
    for state in getattr(optimizer, "state", {}).values():
        for v in state.values():
            if hasattr(v, "numel") and getattr(v, "device", None) is not None and v.device.type == device.type:
                total += _tensor_bytes(v)
    return total


class PhaseTimer:
    """CUDA events around each phase on GPU (read after the step's synchronize); perf_counter on CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object, object]] = []

    @contextlib.contextmanager
    def phase(self, name: str):
        import torch

        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.marks.append((name, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.marks.append((name, t0, time.perf_counter()))

    def totals_ms(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, a, b in self.marks:
            ms = a.elapsed_time(b) if self.cuda else (b - a) * 1e3
            out[name] = out.get(name, 0.0) + ms
        self.marks.clear()
        return out


def run_training(cfg: TrainConfig, progress=None) -> dict:
    import torch

    fast_paths.quiet_imports()
    dist = dist_env()
    device = pick_device(cfg.device, dist.local_rank)
    cfg = resolve_defaults(cfg, device.type)
    strategy = check_config(cfg, device.type, dist)
    if cfg.precision == "fp8":
        fast_paths.check_fp8(device)
    full_spec = get_model(cfg.model)
    spec = truncated(full_spec, cfg.layers)
    fit = None if cfg.skip_fit_check else _check_fit(cfg, device, dist, strategy)
    _init_process_group(device, dist, strategy, cfg.engine)
    megatron = cfg.engine == "megatron"
    data_parallel = dist.world // cfg.tp
    if megatron:
        megatron_engine.init_parallel(cfg.tp, cfg.seed, device.type == "cuda")
    # tensor-parallel ranks of one group see the same batch: seed by data-parallel rank
    dp_rank = dist.rank // cfg.tp
    torch.manual_seed(cfg.seed + dp_rank)
    dtype = torch.bfloat16
    param_dtype = torch.float32 if cfg.precision in ("amp", "fp32") else dtype
    say = progress or (lambda msg: None)
    applied: dict = {"engine": cfg.engine, "precision": cfg.precision, "kernels": [], "fp8_linears": 0,
                     "compile": cfg.compile_scope if cfg.compile else None}

    t_build = time.perf_counter()
    try:
        quantized = 0
        if megatron:
            model = megatron_engine.build_gpt(spec, cfg.attn, device, param_dtype, cfg.recompute, cfg.tp)
        else:
            model = build_model(spec, cfg.attn, device, param_dtype)
            if cfg.method == "qlora":
                quantized = quantize_base_nf4(model, dtype)
            if cfg.precision == "fp8":
                applied["fp8_linears"] = fast_paths.convert_fp8(model)
            applied["kernels"] = fast_paths.apply_kernels(model, cfg.kernels)
            if cfg.method in ("lora", "qlora"):
                model = apply_lora(model, cfg)
            if cfg.recompute == "full":
                enable_recompute(model)
        model.train()
        if cfg.compile and cfg.compile_scope == "layers":
            fast_paths.compile_model(model, "layers")
        trainable = [p for p in model.parameters() if p.requires_grad]
        engine = None
        if strategy == "deepspeed":
            engine, optimizer = _deepspeed(model, trainable, cfg)
            model = engine
        else:
            if strategy == "fsdp":
                model = _fsdp(model, spec, cfg, param_dtype)
                trainable = [p for p in model.parameters() if p.requires_grad]
            elif strategy == "ddp" or (megatron and data_parallel > 1):
                from torch.nn.parallel import DistributedDataParallel

                group = None
                if megatron:
                    from megatron.core import parallel_state

                    group = parallel_state.get_data_parallel_group()
                model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                process_group=group)
            optimizer = _optimizer(trainable, cfg, device)
        if cfg.compile and cfg.compile_scope == "model":
            model = fast_paths.compile_model(model, "model")
    except torch.cuda.OutOfMemoryError:
        raise BenchError(_oom_message(spec, cfg, "building the model")) from None
    except RuntimeError as exc:
        if _cpu_oom(exc):
            raise BenchError(_oom_message(spec, cfg, "building the model")) from None
        raise
    build_s = time.perf_counter() - t_build
    say(f"built {spec.name} ({spec.num_layers} layers) for {cfg.method} with {strategy} ({cfg.engine}, "
        f"{cfg.precision}) in {build_s:.1f} s")

    def loss_of(ids):
        if megatron:
            return megatron_engine.loss_fn(model, ids)
        return model(input_ids=ids, labels=ids).loss

    vocab = spec.vocab_size
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 17 * dp_rank)
    batches = [torch.randint(0, vocab, (cfg.micro_batch, cfg.seq_len), device=device, generator=gen)
               for _ in range(2)]
    autocast = (torch.autocast(device.type, dtype=dtype) if cfg.precision == "amp" else contextlib.nullcontext())
    timer = PhaseTimer(device)
    step_ms: list[float] = []
    phases: list[dict[str, float]] = []
    memory: dict = {}
    is_cuda = device.type == "cuda"

    def one_step(measure_memory: bool) -> None:
        for micro in range(cfg.grad_accum):
            ids = batches[micro % 2]
            if measure_memory and micro == 0 and is_cuda:
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            with timer.phase("forward"), autocast, attention_context(cfg.attn):
                loss = loss_of(ids)
            if measure_memory and micro == 0 and is_cuda:
                torch.cuda.synchronize()
                memory["activations_bytes"] = torch.cuda.max_memory_allocated() - before
            with timer.phase("backward"), attention_context(cfg.attn):
                if engine is not None:
                    engine.backward(loss)
                else:
                    (loss / cfg.grad_accum).backward()
        if measure_memory and engine is None:
            memory["gradients_bytes"] = sum(_tensor_bytes(p.grad) for p in model.parameters() if p.grad is not None)
        with timer.phase("optimizer"):
            if engine is not None:
                engine.step()
            else:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

    total = cfg.warmup + cfg.steps
    try:
        for step in range(total):
            measured = step >= cfg.warmup
            if step == cfg.warmup and is_cuda:
                torch.cuda.reset_peak_memory_stats()
            if is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            one_step(measure_memory=(step == total - 1))
            if is_cuda:
                torch.cuda.synchronize()
            elapsed = (time.perf_counter() - t0) * 1e3
            split = timer.totals_ms()
            if measured:
                step_ms.append(elapsed)
                phases.append(split)
            say(f"step {step + 1}/{total}{'' if measured else ' (warm-up)'}: {elapsed:.1f} ms")
    except torch.cuda.OutOfMemoryError:
        raise BenchError(_oom_message(spec, cfg, "a training step")) from None
    except RuntimeError as exc:
        if _cpu_oom(exc):
            raise BenchError(_oom_message(spec, cfg, "a training step")) from None
        if "No available kernel" in str(exc):
            raise BenchError(f"--attn {cfg.attn} cannot run this shape on this device ({str(exc).splitlines()[0]}); "
                             "try another --attn") from None
        raise

    if is_cuda:
        memory["peak_bytes"] = torch.cuda.max_memory_allocated(device)
        memory["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    params = model.module.parameters() if hasattr(model, "module") and engine is None else model.parameters()
    memory["parameters_bytes"] = sum(_tensor_bytes(p) for p in params)
    if engine is None:
        memory["optimizer_state_bytes"] = _optimizer_state_bytes(optimizer, device)
    else:
        memory["split_note"] = ("DeepSpeed partitions and offloads parameters, gradients and optimizer state; "
                                "only the peak and activations are measured directly")

    step_median = statistics.median(step_ms)
    slowest = _max_over_ranks(step_median, device) if dist.active else step_median
    tokens_per_step = cfg.micro_batch * cfg.seq_len * cfg.grad_accum
    # every data-parallel rank trains its own batch; the ranks of one tensor-parallel group share one
    total_tps = tokens_per_step * data_parallel / (slowest / 1e3)
    per_gpu_tps = total_tps / dist.world
    flops_per_token, formula = training_flops_per_token(spec.matmul_params, spec.num_layers, spec.hidden_size,
                                                        cfg.seq_len, frozen_base=cfg.method != "full")
    tflops = per_gpu_tps * flops_per_token / 1e12
    gpu_name = torch.cuda.get_device_name(device) if is_cuda else "cpu"
    gpu = gpu_for_device(gpu_name) if is_cuda else None
    phase_ms = {k: statistics.median(p.get(k, 0.0) for p in phases) for k in ("forward", "backward", "optimizer")}
    result = {
        "config": {**asdict(cfg), "lora_targets": list(cfg.lora_targets)},
        "strategy": strategy,
        "world_size": dist.world,
        "device": gpu_name,
        "model": {"name": full_spec.name, "layers": spec.num_layers, "full_layers": full_spec.num_layers,
                  "truncated": spec.num_layers != full_spec.num_layers, "parameters": spec.param_count,
                  "trainable_parameters": sum(p.numel() for p in trainable) if engine is None else None,
                  "quantized_linears": quantized},
        "build_s": build_s,
        "steps": {"warmup": cfg.warmup, "measured": cfg.steps, "step_ms_median": step_median,
                  "step_ms_all": step_ms, "slowest_rank_step_ms": slowest},
        "phases_ms_median": phase_ms,
        "phase_timing": "CUDA events per phase" if is_cuda else "perf_counter per phase",
        "throughput": {"tokens_per_s_per_gpu": per_gpu_tps, "tokens_per_s": total_tps,
                       "samples_per_s": total_tps / cfg.seq_len},
        "flops": {"per_token": flops_per_token, "formula": formula, "model_tflops_per_gpu": tflops},
        "mfu": ({"value": tflops / gpu.peak_bf16_tflops, "peak_tflops": gpu.peak_bf16_tflops, "gpu": gpu.key,
                 "peak_source": "catalog (vendor dense bf16 peak)"} if gpu else None),
        "memory": memory,
        "applied": applied,
        "fit_check": fit,
        "data_parallel": data_parallel,
    }
    return result


def _check_fit(cfg: TrainConfig, device, dist: Dist, strategy: str) -> dict:
    where = "in memory" if device.type == "cpu" else "on the GPU"
    weights, grads, opt = shard_factors(strategy, cfg.zero, dist.world)
    weights, grads, opt = weights * cfg.tp, grads * cfg.tp, opt * cfg.tp
    avail, source = available_bytes(device)
    return check_fits(memory_estimate_gib(cfg), avail, source, where, weights, grads, opt,
                      weights_offloaded=cfg.offload in ("param", "both"))


def _max_over_ranks(value: float, device) -> float:
    import torch
    import torch.distributed as tdist

    t = torch.tensor([value], device=device if device.type == "cuda" else "cpu", dtype=torch.float64)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return float(t.item())


def _optimizer(params, cfg: TrainConfig, device):
    import torch

    if cfg.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=cfg.lr)
    if cfg.optimizer != "adamw":
        raise BenchError(f"--optimizer {cfg.optimizer}: choose adamw or adamw8bit")
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=cfg.lr, fused=fused or None)


def _fsdp(model, spec, cfg: TrainConfig, param_dtype):
    from torch.distributed.fsdp import fully_shard

    layers = model.base_model.model.model.layers if cfg.method != "full" else model.model.layers
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def _deepspeed(model, params, cfg: TrainConfig):
    import deepspeed

    zero: dict = {"stage": cfg.zero}
    if cfg.offload in ("optimizer", "both"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if cfg.offload in ("param", "both"):
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "bf16": {"enabled": True},
        "zero_optimization": zero,
        # torch's AdamW on the GPU (no FusedAdam JIT build); DeepSpeed's CPU Adam when the optimizer is offloaded
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, **({} if cfg.offload != "none" else {"torch_adam": True})}},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=config)
    return engine, optimizer


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


def _cpu_oom(exc: BaseException) -> bool:
    return "can't allocate memory" in str(exc) or "DefaultCPUAllocator" in str(exc)


def _oom_message(spec, cfg: TrainConfig, where: str) -> str:
    est = memory_estimate_gib(cfg)
    parts = ", ".join(f"{k} {v:.1f}" for k, v in est.items())
    return (f"out of memory during {where} ({spec.name}, {spec.num_layers} layers, micro-batch {cfg.micro_batch} "
            f"x {cfg.seq_len}); estimate in GiB: {parts}, total {sum(est.values()):.1f}. Try --layers N, "
            "--recompute full, a smaller --micro-batch, or --zero 3 --offload optimizer")
