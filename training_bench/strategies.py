"""How a built model is set up for its method and strategy: the process group, QLoRA's 4-bit base, LoRA adapters,
the optimizer, FSDP2 sharding and DeepSpeed ZeRO. Heavy packages are imported inside each function, so a run
that does not use one does not need it installed."""

from __future__ import annotations

import os

from training_bench.errors import BenchError
from training_bench.train_config import Dist, TrainConfig


def init_process_group(device, dist: Dist, strategy: str, engine: str = "hf") -> None:
    import torch.distributed as tdist

    if tdist.is_initialized():
        return
    if strategy == "deepspeed":
        import deepspeed

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        deepspeed.init_distributed(dist_backend="nccl")
        return
    if dist.active or strategy == "fsdp" or engine == "megatron":
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=dist.rank, world_size=dist.world)


def free_port() -> int:
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
    return get_peft_model(model, config, autocast_adapter_dtype=cfg.lora_dtype == "fp32")


def max_over_ranks(value: float, device) -> float:
    import torch
    import torch.distributed as tdist

    t = torch.tensor([value], device=device if device.type == "cuda" else "cpu", dtype=torch.float64)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return float(t.item())


def make_optimizer(params, cfg: TrainConfig, device):
    import torch

    if cfg.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=cfg.lr)
    if cfg.optimizer != "adamw":
        raise BenchError(f"--optimizer {cfg.optimizer}: choose adamw or adamw8bit")
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=cfg.lr, fused=fused or None)


def shard_fsdp(model, spec, cfg: TrainConfig, param_dtype):
    from torch.distributed.fsdp import fully_shard

    layers = model.base_model.model.model.layers if cfg.method != "full" else model.model.layers
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def deepspeed_engine(model, params, cfg: TrainConfig):
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
