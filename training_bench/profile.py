"""Build the hardware profile the simulated engine loads: measured ceilings plus per-operator cost tables.

Each table maps a size (tokens, or KV tokens for decode attention) to the median time of one layer's
operator; the sim interpolates between points and scales linearly beyond the largest.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone

import torch

from scenarios.catalog import ModelSpec
from training_bench import ops as O
from training_bench.ceilings import copy_ceiling, gemm_ceiling

PROFILE_FORMAT = "dissect-profile"
PROFILE_VERSION = 1
TABLE_OPS = ("qkv", "o_proj", "gate_up", "down", "lm_head", "rmsnorm", "rope", "silu_mul", "embedding")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}"


def build_profile(model: ModelSpec, device: torch.device, dtype: torch.dtype, token_grid: list[int],
                  prefill_seqs: list[int], decode_points: list[tuple[int, int]], attention_impl: str,
                  gemm_n: int, copy_bytes: int, warmup: int, reps: int, catalog_gpu: str | None,
                  progress=lambda msg: None) -> dict:
    progress("ceilings")  # first, before a long series of operators warms the GPU up
    gemm = gemm_ceiling(device, dtype, gemm_n, warmup, reps)
    copy = copy_ceiling(device, copy_bytes, warmup, reps)
    tables: dict[str, dict[str, list]] = {name: {"tokens": [], "seconds": []} for name in TABLE_OPS}
    groups = ("gemm", "norm", "rope", "activation", "embedding")
    for tokens in token_grid:
        progress(f"ops at {tokens} tokens")
        for case in O.op_cases(model, 1, tokens, tokens, 1, only=groups, phases=("prefill",)):
            if case.name not in tables:
                continue
            if case.name == "lm_head":  # the LM head sees one row per sequence; time it at `tokens` rows
                case = O._linear_case("lm_head", "prefill", tokens, model.hidden_size, model.vocab_size, False)
            result = O.run_case(case, device, dtype, warmup, reps)
            if result.timing is not None:
                tables[case.name]["tokens"].append(tokens)
                tables[case.name]["seconds"].append(result.timing.median_s)
    attn_prefill = {"tokens": [], "seconds": [], "impl": attention_impl}
    for seq in prefill_seqs:
        progress(f"prefill attention at {seq}")
        case = O._attention_case(attention_impl, "prefill", 1, model.num_heads, model.num_kv_heads, seq, seq,
                                 model.head_dim, False)
        result = O.run_case(case, device, dtype, warmup, reps)
        if result.timing is not None:
            attn_prefill["tokens"].append(seq)
            attn_prefill["seconds"].append(result.timing.median_s)
    attn_decode = {"kv_tokens": [], "seconds": [], "points": [], "impl": attention_impl}
    for batch, context in decode_points:
        progress(f"decode attention b{batch} x {context}")
        case = O._attention_case(attention_impl, "decode", batch, model.num_heads, model.num_kv_heads, 1, context,
                                 model.head_dim, False)
        result = O.run_case(case, device, dtype, warmup, reps)
        if result.timing is not None:
            attn_decode["kv_tokens"].append(batch * context)
            attn_decode["seconds"].append(result.timing.median_s)
            attn_decode["points"].append([batch, context])
    order = sorted(range(len(attn_decode["kv_tokens"])), key=lambda i: attn_decode["kv_tokens"][i])
    for key in ("kv_tokens", "seconds", "points"):
        attn_decode[key] = [attn_decode[key][i] for i in order]
    return {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "catalog_gpu": catalog_gpu,
        "model": model.name,
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "ceilings": {"gemm": gemm, "copy": copy},
        "ops": {**tables, "attention_prefill": attn_prefill, "attention_decode": attn_decode},
        "notes": "per-layer operator medians on one device (tensor parallel degree 1); "
                 "the sim divides sharded operators by its TP degree",
    }
