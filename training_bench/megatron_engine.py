"""`--engine megatron`: the catalog's Llama shape built with megatron-core's GPTModel, as Megatron-LM trains it.

The layer spec is megatron-core's local one (its own ColumnParallel/RowParallel linears, torch RMSNorm, no
Transformer Engine, which is built against one torch and CUDA and cannot be carried as a wheel). Attention:
`--attn eager` keeps the local spec's DotProductAttention (scores materialised, as HF eager), and `--attn sdpa`
(or an sdpa-* backend) swaps its core attention for `SDPACoreAttention`, PyTorch's fused kernels, which is what
TE's attention would give. Tensor parallelism comes from `--tp` under torchrun; the remaining ranks are data
parallel.

On CPU megatron-core builds the model (with `use_cpu_initialization`), but its forward does not run: the RoPE
module moves its frequency table to `torch.cuda.current_device()`, and dropout forks the CUDA RNG tracker.
"""

from __future__ import annotations

from training_bench.errors import BenchError

ATTENTION = ("eager", "sdpa", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math")


def check_megatron(cfg, device_type: str, world: int) -> None:
    """Everything `--engine megatron` refuses, before anything is built (the hardware first: importing
    megatron-core prints a warning per missing Apex/TE fallback)."""
    if device_type != "cuda":
        raise BenchError("--engine megatron needs a CUDA GPU: megatron-core's GPTModel moves its RoPE table to "
                         "torch.cuda.current_device() in the forward; on CPU use --engine hf")
    import_megatron()
    if cfg.method != "full":
        raise BenchError(f"--engine megatron trains all parameters; --method {cfg.method} needs --engine hf (peft)")
    if cfg.attn not in ATTENTION:
        raise BenchError(f"--engine megatron --attn {cfg.attn}: choose eager (megatron's local attention) or sdpa")
    if cfg.precision not in ("bf16", "fp32"):
        raise BenchError(f"--engine megatron --precision {cfg.precision}: megatron-core's FP8 needs Transformer "
                         "Engine; use --precision bf16 (or --engine hf --precision fp8 for torchao's float8)")
    if cfg.compile:
        raise BenchError("--engine megatron --compile is not wired here (megatron-core has its own fusions); "
                         "leave --compile off")
    if cfg.zero or cfg.strategy not in ("auto", "single", "ddp"):
        raise BenchError("--engine megatron runs its own tensor parallelism with data parallel ranks; leave "
                         "--zero and --strategy at their defaults")
    if cfg.optimizer != "adamw":
        raise BenchError("--engine megatron uses torch's AdamW; leave --optimizer adamw")
    if cfg.tp < 1 or world % cfg.tp:
        raise BenchError(f"--tp {cfg.tp} must divide the {world} processes torchrun started")


def import_megatron():
    """megatron.core, with its 'Transformer Engine and Apex are not installed' warnings (one per module that
    falls back to torch, which is the point of the local spec) silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex) (is|are) not installed.*")
        try:
            import megatron.core
            import megatron.core.models.gpt  # noqa: F401  (the imports that warn)
        except ImportError:
            raise BenchError("--engine megatron needs megatron-core; install it with "
                             "pip install 'dissect[megatron]'") from None
    return megatron.core


def _sdpa_core_attention_class():
    import torch.nn.functional as F
    from megatron.core.transformer.module import MegatronModule

    class SDPACoreAttention(MegatronModule):
        """megatron-core's core-attention interface over F.scaled_dot_product_attention (causal, GQA).

        In: query [sq, b, np, hn], key and value [sk, b, ng, hn]; out: [sq, b, np * hn], as DotProductAttention.
        """

        def __init__(self, config, layer_number=None, attn_mask_type=None, attention_type=None,
                     attention_dropout=None, softmax_scale=None, **_):
            super().__init__(config=config)
            self.softmax_scale = softmax_scale

        def forward(self, query, key, value, attention_mask=None, attn_mask_type=None, attention_bias=None,
                    packed_seq_params=None):
            if attention_bias is not None or packed_seq_params is not None:
                raise BenchError("SDPACoreAttention takes neither attention bias nor packed sequences")
            q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale,
                                                 enable_gqa=k.shape[1] != q.shape[1])
            sq, b = query.shape[0], query.shape[1]
            return out.permute(2, 0, 1, 3).reshape(sq, b, -1)

    return SDPACoreAttention


def sdpa_core_attention():
    """The SDPACoreAttention class (built lazily: megatron-core is an optional extra)."""
    return _sdpa_core_attention_class()


def transformer_config(spec, dtype, recompute: str, on_cpu: bool, tp: int = 1):
    """The Llama architecture in megatron-core's terms: SwiGLU (gated linear unit + SiLU), RMSNorm, RoPE, no
    biases, untied embeddings, grouped-query attention, no dropout; every fusion that needs apex or TE off."""
    import torch
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import TransformerConfig

    extra = {}
    if recompute == "full":
        extra = {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1}
    return TransformerConfig(
        num_layers=spec.num_layers, hidden_size=spec.hidden_size, num_attention_heads=spec.num_heads,
        num_query_groups=spec.num_kv_heads, ffn_hidden_size=spec.intermediate_size, kv_channels=spec.head_dim,
        gated_linear_unit=True, activation_func=F.silu, normalization="RMSNorm", layernorm_epsilon=spec.rms_norm_eps,
        add_bias_linear=False, add_qkv_bias=False, hidden_dropout=0.0, attention_dropout=0.0,
        bias_activation_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False,
        bias_dropout_fusion=False, apply_rope_fusion=False, gradient_accumulation_fusion=False,
        tensor_model_parallel_size=tp, use_cpu_initialization=on_cpu, params_dtype=dtype, bf16=dtype is torch.bfloat16,
        pipeline_dtype=dtype, **extra)


def layer_spec(attn: str):
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    if attn != "eager":
        spec.submodules.self_attention.submodules.core_attention = sdpa_core_attention()
    return spec


def init_parallel(tp: int, seed: int, on_cuda: bool) -> None:
    """megatron-core's parallel state over the process group already initialised (one process: a group of 1)."""
    import_megatron()
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=1)
    if on_cuda:
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(seed)


def build_gpt(spec, attn: str, device, dtype, recompute: str = "none", tp: int = 1):
    """GPTModel of the catalog shape, parameters allocated on `device` (megatron-core initialises on the current
    CUDA device unless told to initialise on the CPU)."""
    import torch

    import_megatron()
    from megatron.core.models.gpt import GPTModel

    on_cpu = device.type == "cpu"
    config = transformer_config(spec, dtype, recompute, on_cpu, tp)
    with torch.device(device):
        model = GPTModel(config=config, transformer_layer_spec=layer_spec(attn), vocab_size=spec.vocab_size,
                         max_sequence_length=spec.max_context, position_embedding_type="rope",
                         rotary_base=int(spec.rope_theta), share_embeddings_and_output_weights=spec.tie_word_embeddings,
                         pre_process=True, post_process=True)
    return model


def loss_fn(model, ids):
    """Mean next-token loss: megatron-core takes labels already shifted and returns the loss per token [b, s]."""
    import torch

    positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand_as(ids)
    labels = torch.roll(ids, shifts=-1, dims=1)
    return model(input_ids=ids, position_ids=positions, attention_mask=None, labels=labels).mean()
