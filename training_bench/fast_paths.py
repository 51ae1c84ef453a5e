"""The faster training paths of the HF Llama, each one option: fused kernels (liger-kernel), FP8 linears
(torchao float8 training) and torch.compile. Each `check_*` runs before anything is built and names the fix.
"""

from __future__ import annotations

import logging

from training_bench.errors import BenchError

KERNELS = ("none", "liger")
# torch.compile targets: each decoder layer separately (torchtitan's choice: the 32 identical layers share one
# graph, so the compile cost is one layer's) or the whole model.
COMPILE_SCOPES = ("layers", "model")
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper: the first GPUs whose tensor cores take float8 (torch._scaled_mm)


def quiet_imports() -> None:
    """torchao (imported by liger-kernel and transformers too) logs a warning per CUDA extension it cannot load
    on a CPU torch, and registers enums torch 2.13 warns about; neither concerns a training run."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def check_kernels(kernels: str, device_type: str, engine: str) -> None:
    if kernels not in KERNELS:
        raise BenchError(f"--kernels {kernels}: choose one of {', '.join(KERNELS)}")
    if kernels == "none":
        return
    if engine != "hf":
        raise BenchError("--kernels liger patches the Hugging Face Llama; with --engine megatron leave --kernels none")
    if device_type != "cuda":
        raise BenchError("--kernels liger runs Triton kernels, which need a CUDA GPU; on CPU use --kernels none")
    quiet_imports()
    try:
        import liger_kernel.transformers  # noqa: F401
    except ImportError:
        raise BenchError("--kernels liger needs liger-kernel (and triton); install it with "
                         "pip install 'dissect[kernels]'") from None


def apply_kernels(model, kernels: str) -> list[str]:
    """liger-kernel's fused RMSNorm, RoPE, SwiGLU and fused linear cross-entropy (the logits are never
    materialised), patched into this model instance. liger patches the transformers module as well, so every
    later Llama of the process gets them too: each run (and sweep point) is its own process. Returns what was
    replaced, for the report."""
    if kernels == "none":
        return []
    quiet_imports()
    from liger_kernel.transformers import apply_liger_kernel_to_llama
    from transformers import LlamaForCausalLM

    # a peft wrapper keeps the Llama inside; the patch goes on the Llama itself
    target = next(m for m in model.modules() if isinstance(m, LlamaForCausalLM))
    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=True, model=target)
    return ["rms_norm", "rope", "swiglu", "fused_linear_cross_entropy"]


def check_fp8(device) -> None:
    if device.type != "cuda":
        raise BenchError("--precision fp8 needs an H100/H200-class GPU (float8 tensor cores, compute capability "
                         "8.9+); on CPU use --precision fp32 or bf16")
    quiet_imports()
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        raise BenchError("--precision fp8 needs torchao; install it with pip install 'dissect[fp8]'") from None
    import torch

    cap = torch.cuda.get_device_capability(device)
    if cap < FP8_MIN_CAPABILITY:
        raise BenchError(f"--precision fp8 needs an H100/H200-class GPU (compute capability 8.9+); "
                         f"{torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}: use --precision bf16")


def fp8_filter(module, fqn: str) -> bool:
    """Which linears get float8: the decoder's, not the LM head (as torchtitan: its output feeds the loss, where
    float8's error shows most), and only shapes whose dimensions divide by 16 (torch._scaled_mm's requirement)."""
    import torch

    if not isinstance(module, torch.nn.Linear) or fqn.split(".")[-1] == "lm_head":
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def convert_fp8(model) -> int:
    """torchao float8 training (dynamic tensorwise scaling) on the decoder linears. Returns how many."""
    quiet_imports()
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    from torchao.float8.float8_linear import Float8Linear

    convert_to_float8_training(model, config=Float8LinearConfig(), module_filter_fn=fp8_filter)
    return sum(isinstance(m, Float8Linear) for m in model.modules())


def decoder_layers(model):
    """The decoder layer list of an HF Llama, bare or under peft."""
    import torch

    for name, module in model.named_modules():
        if name.split(".")[-1] == "layers" and isinstance(module, torch.nn.ModuleList):
            return module
    raise BenchError("--compile-scope layers: this model has no decoder layer list; use --compile-scope model")


def compile_model(model, scope: str):
    """torch.compile with the default inductor mode, no CUDA graphs (the step has an optimizer outside the graph
    and dynamic memory). `layers` compiles each decoder layer in place and returns the model itself."""
    import torch

    if scope not in COMPILE_SCOPES:
        raise BenchError(f"--compile-scope {scope}: choose one of {', '.join(COMPILE_SCOPES)}")
    if scope == "model":
        return torch.compile(model)
    for layer in decoder_layers(model):
        layer.compile()  # in place: parameter names stay as they are
    return model
