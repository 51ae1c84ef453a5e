"""Pre-training and fine-tuning runs: a real model, real optimizer steps, timed phase by phase.

One `TrainConfig` describes a run (method, systems options, shapes); `run_training` builds everything, runs the
warm-up and timed steps, and returns a JSON-ready result: tokens/s, model TFLOP/s and MFU with the FLOP formula,
forward/backward/optimizer times, and peak memory with its split. Under torchrun every rank runs the same loop;
rank 0 reports totals (tokens/s over all ranks, the slowest rank's step time).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict

from scenarios.catalog import get_model, gpu_for_device
from scenarios.provenance import code_version, package_versions
from training_bench import fast_paths, megatron_engine
from training_bench.devices import pick_device
from training_bench.errors import BenchError
from training_bench.flops import training_flops_per_token
from training_bench.memory_fit import available_bytes, check_fits, shard_factors
from training_bench.model_build import attention_context, build_model, enable_recompute, truncated
from training_bench.strategies import (
    apply_lora,
    deepspeed_engine,
    init_process_group,
    make_optimizer,
    max_over_ranks,
    quantize_base_nf4,
    shard_fsdp,
)
from training_bench.train_config import (
    Dist,
    TrainConfig,
    check_config,
    dist_env,
    memory_estimate_gib,
    resolve_defaults,
)


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
    init_process_group(device, dist, strategy, cfg.engine)
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
                applied["lora_dtype"] = str(next(p.dtype for n, p in model.named_parameters()
                                                 if "lora_" in n)).removeprefix("torch.")
            if cfg.recompute == "full":
                enable_recompute(model)
        model.train()
        if cfg.compile and cfg.compile_scope == "layers":
            fast_paths.compile_model(model, "layers")
        trainable = [p for p in model.parameters() if p.requires_grad]
        engine = None
        if strategy == "deepspeed":
            engine, optimizer = deepspeed_engine(model, trainable, cfg)
            model = engine
        else:
            if strategy == "fsdp":
                model = shard_fsdp(model, spec, cfg, param_dtype)
                trainable = [p for p in model.parameters() if p.requires_grad]
            elif strategy == "ddp" or (megatron and data_parallel > 1):
                from torch.nn.parallel import DistributedDataParallel

                group = None
                if megatron:
                    from megatron.core import parallel_state

                    group = parallel_state.get_data_parallel_group()
                model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                process_group=group)
            optimizer = make_optimizer(trainable, cfg, device)
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
    slowest = max_over_ranks(step_median, device) if dist.active else step_median
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
        "mfu": mfu_figures(tflops, gpu, applied.get("precision")),
        "memory": memory,
        "applied": applied,
        "fit_check": fit,
        "data_parallel": data_parallel,
        "environment": environment(is_cuda),
    }
    return result


# The libraries whose versions move a training figure: the framework, the model code, and each fast path.
TRAINING_PACKAGES = ("torch", "transformers", "peft", "accelerate", "deepspeed", "bitsandbytes", "liger-kernel",
                     "torchao", "megatron-core", "flash-attn")


def environment(is_cuda: bool) -> dict:
    """The code and packages that produced the figures, and the CUDA stack under them."""
    import torch

    env = {"tool": "dissect training_bench", **code_version(), "packages": package_versions(TRAINING_PACKAGES)}
    env["packages"]["torch"] = torch.__version__  # a local build's own version string (e.g. +cu130)
    if is_cuda:
        env["cuda"] = torch.version.cuda
    return env


def _check_fit(cfg: TrainConfig, device, dist: Dist, strategy: str) -> dict:
    where = "in memory" if device.type == "cpu" else "on the GPU"
    weights, grads, opt = shard_factors(strategy, cfg.zero, dist.world)
    weights, grads, opt = weights * cfg.tp, grads * cfg.tp, opt * cfg.tp
    avail, source = available_bytes(device)
    return check_fits(memory_estimate_gib(cfg), avail, source, where, weights, grads, opt,
                      weights_offloaded=cfg.offload in ("param", "both"))


def _cpu_oom(exc: BaseException) -> bool:
    return "can't allocate memory" in str(exc) or "DefaultCPUAllocator" in str(exc)


def _oom_message(spec, cfg: TrainConfig, where: str) -> str:
    est = memory_estimate_gib(cfg)
    parts = ", ".join(f"{k} {v:.1f}" for k, v in est.items())
    return (f"out of memory during {where} ({spec.name}, {spec.num_layers} layers, micro-batch {cfg.micro_batch} "
            f"x {cfg.seq_len}); estimate in GiB: {parts}, total {sum(est.values()):.1f}. Try --layers N, "
            "--recompute full, a smaller --micro-batch, or --zero 3 --offload optimizer")


def mfu_figures(tflops: float, gpu, precision: str | None) -> dict | None:
    """Model FLOP utilisation against the catalog's dense bf16 peak, so rows of every precision compare; an FP8 run
    also states it against the FP8 peak (twice the bf16 one on Hopper), which is the ceiling it runs under."""
    if gpu is None:
        return None
    out = {"value": tflops / gpu.peak_bf16_tflops, "peak_tflops": gpu.peak_bf16_tflops, "gpu": gpu.key,
           "basis": "bf16", "peak_source": "catalog (vendor dense bf16 peak)"}
    if precision == "fp8" and gpu.peak_fp8_tflops:
        out.update(fp8_peak_tflops=gpu.peak_fp8_tflops, of_fp8_peak=tflops / gpu.peak_fp8_tflops)
    return out
