"""Transformer operators at a catalog model's real shapes, timed one by one.

Prefill: tokens = batch x seq. Decode: tokens = batch, attention against a KV cache of `context`.
Tensor parallelism t shards what Megatron-style TP shards: QKV/gate-up output features, O/down input
features, attention heads and the LM head's vocabulary, each by t.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from scenarios.catalog import ModelSpec
from training_bench import flops as fl
from training_bench.errors import BenchError
from training_bench.timing import Timing, copies_for, measure

ATTENTION_IMPLS = ("eager", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math")
GROUPS = ("gemm", "attention", "norm", "rope", "activation", "softmax", "embedding")
# Operators that run on the matrix units whose ceiling the GEMM measures. The others run on vector units, whose
# compute ceiling is not measured, so they are set against the copy bandwidth only and never called compute-bound
# (on a CPU, where bf16 GEMMs are slow, the GEMM ridge point would call RMSNorm compute-bound).
MATRIX_GROUPS = ("gemm", "attention")


@dataclass
class OpCase:
    name: str
    group: str
    phase: str  # "prefill", "decode" or "train" (forward + backward)
    shape: str
    tokens: int
    flops: float
    bytes: float
    build: Callable[[torch.device, torch.dtype, int], list[Callable[[], object]]] = field(repr=False)
    params: dict = field(default_factory=dict)
    # Entered once around building and timing (e.g. choosing an SDPA backend), not per call.
    context: Callable[[], contextlib.AbstractContextManager] = field(default=contextlib.nullcontext, repr=False)


@dataclass
class OpResult:
    case: OpCase
    timing: Timing | None
    skipped: str | None = None

    def as_dict(self, gemm_ceiling: float | None = None, copy_ceiling: float | None = None) -> dict:
        c = self.case
        out = {"name": c.name, "group": c.group, "phase": c.phase, "shape": c.shape, "tokens": c.tokens,
               "flops": c.flops, "bytes": c.bytes, **c.params}
        if self.timing is None:
            return {**out, "skipped": self.skipped}
        t = self.timing.median_s
        tflops = c.flops / t / 1e12 if c.flops else None
        gbs = c.bytes / t / 1e9
        intensity = c.flops / c.bytes if c.bytes else math.inf
        ridge = (gemm_ceiling * 1e12) / (copy_ceiling * 1e9) if gemm_ceiling and copy_ceiling else None
        bound = frac = ceiling = None
        if c.group in MATRIX_GROUPS and ridge is not None:
            bound = "compute" if intensity >= ridge else "memory"
        if bound == "compute" and tflops is not None:
            frac, ceiling = tflops / gemm_ceiling, "gemm"
        elif copy_ceiling:
            frac, ceiling = gbs / copy_ceiling, "copy"
        return {**out, **self.timing.as_dict(), "tflops": tflops, "gbs": gbs, "intensity_flop_per_byte": intensity,
                "bound": bound, "fraction_of_ceiling": frac, "ceiling": ceiling}


def _randn(shape, device, dtype, requires_grad=False) -> torch.Tensor:
    return (torch.randn(shape, device=device, dtype=torch.float32) * 0.5).to(dtype).requires_grad_(requires_grad)


def _rotated(make: Callable[[], Callable[[], object]], nbytes: float) -> list[Callable[[], object]]:
    return [make() for _ in range(copies_for(int(nbytes)))]


def _linear_case(name: str, phase: str, tokens: int, d_in: int, d_out: int, backward: bool) -> OpCase:
    f, b = fl.linear_backward(tokens, d_in, d_out) if backward else fl.linear(tokens, d_in, d_out)
    if backward:
        f0, b0 = fl.linear(tokens, d_in, d_out)
        f, b = f + f0, b + b0

    def build(device, dtype, _):
        def make():
            x = _randn((tokens, d_in), device, dtype, backward)
            w = _randn((d_out, d_in), device, dtype, backward)
            if not backward:
                return lambda: F.linear(x, w)
            g = _randn((tokens, d_out), device, dtype)
            return lambda: F.linear(x, w).backward(g)

        return _rotated(make, b)

    return OpCase(name, "gemm", "train" if backward else phase, f"[{tokens}x{d_in}] @ [{d_in}x{d_out}]", tokens, f, b,
                  build)


def _sdpa_context(impl: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
               "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa-math": SDPBackend.MATH}[impl]
    return sdpa_kernel(backend)


def _attention_fn(impl: str, q, k, v, causal: bool, gqa: bool):
    if impl == "eager":
        group = q.shape[1] // k.shape[1]
        kk = k.repeat_interleave(group, dim=1) if group > 1 else k
        vv = v.repeat_interleave(group, dim=1) if group > 1 else v
        scale = 1.0 / math.sqrt(q.shape[-1])
        mask = None
        if causal:
            lq, lk = q.shape[2], kk.shape[2]
            mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq).logical_not()

        def eager():
            s = (q @ kk.transpose(-1, -2)) * scale
            if mask is not None:
                s = s.masked_fill(mask, float("-inf"))
            return torch.softmax(s.float(), dim=-1).to(q.dtype) @ vv

        return eager
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)


def _attention_case(impl: str, phase: str, batch: int, heads: int, kv_heads: int, q_len: int, kv_len: int,
                    head_dim: int, backward: bool) -> OpCase:
    causal = phase != "decode"
    if phase == "decode":
        f, b = fl.attention_decode(batch, heads, kv_len, head_dim, kv_heads)
    else:
        f, b = fl.attention_prefill(batch, heads, q_len, head_dim, kv_heads)
    if backward:
        f, b = f * 3.5, b * 2.5  # FlashAttention-2 convention: backward = 2.5x forward FLOPs (recompute QK^T)
    gqa = kv_heads != heads

    def build(device, dtype, _):
        def make():
            q = _randn((batch, heads, q_len, head_dim), device, dtype, backward)
            k = _randn((batch, kv_heads, kv_len, head_dim), device, dtype, backward)
            v = _randn((batch, kv_heads, kv_len, head_dim), device, dtype, backward)
            fn = _attention_fn(impl, q, k, v, causal, gqa)
            if not backward:
                return fn
            g = _randn((batch, heads, q_len, head_dim), device, dtype)
            return lambda: fn().backward(g)

        return _rotated(make, b)

    shape = f"b{batch} h{heads}/{kv_heads} q{q_len} kv{kv_len} d{head_dim}"
    context = (lambda: _sdpa_context(impl)) if impl.startswith("sdpa") else contextlib.nullcontext
    return OpCase(f"attention[{impl}]", "attention", "train" if backward else phase, shape, batch * q_len, f, b, build,
                  {"impl": impl, "causal": causal}, context)


def _elementwise_case(name: str, group: str, phase: str, tokens: int, counts: tuple[float, float],
                      make_fn: Callable[[torch.device, torch.dtype], Callable[[], object]], shape: str) -> OpCase:
    def build(device, dtype, _):
        return _rotated(lambda: make_fn(device, dtype), counts[1])

    return OpCase(name, group, phase, shape, tokens, counts[0], counts[1], build)


def _rmsnorm(tokens, hidden, eps):
    def make(device, dtype):
        x, w = _randn((tokens, hidden), device, dtype), _randn((hidden,), device, dtype)
        return lambda: F.rms_norm(x, (hidden,), w, eps)

    return make


def _rope(tokens, heads, kv_heads, head_dim):
    def make(device, dtype):
        q = _randn((tokens, heads, head_dim), device, dtype)
        k = _randn((tokens, kv_heads, head_dim), device, dtype)
        cos = _randn((tokens, 1, head_dim), device, dtype)
        sin = _randn((tokens, 1, head_dim), device, dtype)

        def rotate(x):
            x1, x2 = x.chunk(2, dim=-1)
            return torch.cat((-x2, x1), dim=-1)

        return lambda: (q * cos + rotate(q) * sin, k * cos + rotate(k) * sin)

    return make


def _silu_mul(tokens, inter):
    def make(device, dtype):
        g, u = _randn((tokens, inter), device, dtype), _randn((tokens, inter), device, dtype)
        return lambda: F.silu(g) * u

    return make


def _softmax(rows, cols):
    def make(device, dtype):
        s = _randn((rows, cols), device, dtype)
        return lambda: torch.softmax(s, dim=-1)

    return make


def _embedding(tokens, vocab, hidden):
    def make(device, dtype):
        table = _randn((vocab, hidden), device, dtype)
        ids = torch.randint(0, vocab, (tokens,), device=device)
        return lambda: F.embedding(ids, table)

    return make


def check_tp(model: ModelSpec, tp: int) -> None:
    """Tensor parallelism t shards heads, KV heads, the MLP and the vocabulary t ways: each must divide."""
    for what, n in (("heads", model.num_heads), ("KV heads", model.num_kv_heads),
                    ("intermediate size", model.intermediate_size), ("vocabulary", model.vocab_size)):
        if n % tp:
            raise BenchError(f"{model.name}: {what} ({n}) do not divide by tensor parallel degree {tp}; choose --tp "
                             f"from the divisors of {n}")


def op_cases(model: ModelSpec, prefill_batch: int, seq_len: int, decode_batch: int, context: int, tp: int = 1,
             only: tuple[str, ...] = GROUPS, attention_impls: tuple[str, ...] = ("sdpa-flash",),
             backward: bool = False, phases: tuple[str, ...] = ("prefill", "decode")) -> list[OpCase]:
    """The operators of one decoder layer (plus embedding and LM head) for prefill and decode."""
    h, inter, hd = model.hidden_size, model.intermediate_size, model.head_dim
    check_tp(model, tp)
    heads, kv_heads = model.num_heads // tp, model.num_kv_heads // tp
    cases: list[OpCase] = []
    runs = [(p, False) for p in phases] + ([("prefill", True)] if backward and "prefill" in phases else [])
    for phase, bwd in runs:
        tokens = prefill_batch * seq_len if phase == "prefill" else decode_batch
        groups = only if not bwd else tuple(g for g in only if g in ("gemm", "attention"))
        if "gemm" in groups:
            cases += [
                _linear_case("qkv", phase, tokens, h, (heads + 2 * kv_heads) * hd, bwd),
                _linear_case("o_proj", phase, tokens, heads * hd, h, bwd),
                _linear_case("gate_up", phase, tokens, h, 2 * inter // tp, bwd),
                _linear_case("down", phase, tokens, inter // tp, h, bwd),
            ]
            if not bwd:
                cases.append(_linear_case("lm_head", phase, prefill_batch if phase == "prefill" else decode_batch, h,
                                          model.vocab_size // tp, False))
        if "attention" in groups:
            for impl in attention_impls:
                if phase == "prefill":
                    cases.append(_attention_case(impl, phase, prefill_batch, heads, kv_heads, seq_len, seq_len, hd, bwd))
                else:
                    cases.append(_attention_case(impl, phase, decode_batch, heads, kv_heads, 1, context, hd, False))
        if "norm" in groups:
            cases.append(_elementwise_case("rmsnorm", "norm", phase, tokens, fl.rmsnorm(tokens, h),
                                           _rmsnorm(tokens, h, model.rms_norm_eps), f"[{tokens}x{h}]"))
        if "rope" in groups:
            cases.append(_elementwise_case("rope", "rope", phase, tokens, fl.rope(tokens, heads, kv_heads, hd),
                                           _rope(tokens, heads, kv_heads, hd), f"q[{tokens}x{heads}x{hd}] k[..x{kv_heads}x..]"))
        if "activation" in groups:
            cases.append(_elementwise_case("silu_mul", "activation", phase, tokens, fl.silu_mul(tokens, inter // tp),
                                           _silu_mul(tokens, inter // tp), f"[{tokens}x{inter // tp}]"))
        if "softmax" in groups:
            rows = prefill_batch * heads * seq_len if phase == "prefill" else decode_batch * heads
            cols = seq_len if phase == "prefill" else context
            cases.append(_elementwise_case("softmax", "softmax", phase, tokens, fl.softmax(rows, cols),
                                           _softmax(rows, cols), f"[{rows}x{cols}]"))
        if "embedding" in groups:
            cases.append(_elementwise_case("embedding", "embedding", phase, tokens, fl.embedding(tokens, h),
                                           _embedding(tokens, model.vocab_size, h), f"{tokens} of [{model.vocab_size}x{h}]"))
    return cases


def run_case(case: OpCase, device: torch.device, dtype: torch.dtype, warmup: int, reps: int,
             min_time_s: float = 0.0) -> OpResult:
    calls: list = []
    try:
        with case.context():
            calls = case.build(device, dtype, reps)
            timing = measure(calls, device, warmup, reps, min_time_s)
    except (RuntimeError, NotImplementedError) as exc:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return OpResult(case, None, f"not available here: {first[:200]}")
    finally:
        calls.clear()  # free the rotated inputs before the next operator allocates its own
    return OpResult(case, timing)
