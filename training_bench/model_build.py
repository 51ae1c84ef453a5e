"""A Llama-shaped `transformers` model from the catalog, built with random weights directly on the device.

Building on the GPU takes seconds for 7B; building on the CPU first and moving takes minutes. `layers` truncates
depth so a large shape fits one GPU; every report says when it did.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from scenarios.catalog import ModelSpec
from training_bench.errors import BenchError

# --attn name -> (transformers attn_implementation, torch SDPA backend name or None)
ATTENTION = {
    "eager": ("eager", None),
    "sdpa": ("sdpa", None),  # PyTorch picks
    "sdpa-flash": ("sdpa", "FLASH_ATTENTION"),
    "sdpa-efficient": ("sdpa", "EFFICIENT_ATTENTION"),
    "sdpa-cudnn": ("sdpa", "CUDNN_ATTENTION"),
    "sdpa-math": ("sdpa", "MATH"),
    "flash-attn": ("flash_attention_2", None),
}


def truncated(spec: ModelSpec, layers: int | None) -> ModelSpec:
    if layers is None or layers == spec.num_layers:
        return spec
    if not 1 <= layers <= spec.num_layers:
        raise BenchError(f"--layers {layers}: {spec.name} has {spec.num_layers} layers; give 1..{spec.num_layers}")
    return replace(spec, num_layers=layers)


def llama_config(spec: ModelSpec, attn: str):
    from transformers import LlamaConfig

    impl, _ = ATTENTION[attn]
    config = LlamaConfig(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_context, rope_theta=spec.rope_theta, rms_norm_eps=spec.rms_norm_eps,
        tie_word_embeddings=spec.tie_word_embeddings, use_cache=False,
    )
    config._attn_implementation = impl
    return config


def check_attention(attn: str, device_type: str) -> None:
    if attn not in ATTENTION:
        raise BenchError(f"--attn {attn}: choose one of {', '.join(ATTENTION)}")
    if attn == "flash-attn":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise BenchError("--attn flash-attn needs the flash-attn package; use --attn sdpa-flash (the same "
                             "kernel family, built into PyTorch)") from None
        if device_type != "cuda":
            raise BenchError("--attn flash-attn runs on CUDA GPUs only; use --attn sdpa-flash or eager on CPU")
    if attn in ("sdpa-cudnn", "sdpa-efficient") and device_type != "cuda":
        raise BenchError(f"--attn {attn} is a CUDA kernel; on CPU use eager, sdpa-flash or sdpa-math")


def build_model(spec: ModelSpec, attn: str, device, dtype):
    """Random-weight LlamaForCausalLM in `dtype`, allocated and initialised on `device`."""
    import torch
    from transformers import LlamaForCausalLM

    config = llama_config(spec, attn)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype)


def attention_context(attn: str):
    """The SDPA backend restriction for forward and backward (a no-op for eager, sdpa and flash-attn)."""
    _, backend = ATTENTION[attn]
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, backend)])


def enable_recompute(model) -> None:
    """Full activation recomputation (non-reentrant checkpointing of every decoder layer); transformers 5.23
    renamed the method, older versions only have the first name."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
