"""FLOP and byte counts of transformer operators (pure functions, unit-tested against hand counts).

Conventions: a multiply-add is 2 FLOPs; bytes are the minimum traffic to and from device memory
(read every input once, write every output once) at `elem` bytes per element.
"""

from __future__ import annotations


def linear(tokens: int, d_in: int, d_out: int, elem: int = 2) -> tuple[float, float]:
    return 2.0 * tokens * d_in * d_out, float(elem * (tokens * d_in + d_in * d_out + tokens * d_out))


def linear_backward(tokens: int, d_in: int, d_out: int, elem: int = 2) -> tuple[float, float]:
    """Gradients w.r.t. input and weight: two GEMMs of the forward's size."""
    return 4.0 * tokens * d_in * d_out, float(elem * (2 * tokens * d_out + 2 * d_in * d_out + 2 * tokens * d_in))


def attention_prefill(batch: int, heads: int, seq: int, head_dim: int, kv_heads: int | None = None,
                      causal: bool = True, elem: int = 2) -> tuple[float, float]:
    """QK^T and PV. Causal counts the keys each query sees: seq*(seq+1)/2 per head (the halving applied)."""
    kv_heads = kv_heads or heads
    pairs = seq * (seq + 1) / 2 if causal else float(seq * seq)
    flops = 4.0 * batch * heads * head_dim * pairs
    traffic = elem * batch * seq * head_dim * (2 * heads + 2 * kv_heads)  # read q, k, v; write o
    return flops, float(traffic)


def attention_decode(batch: int, heads: int, context: int, head_dim: int, kv_heads: int | None = None,
                     elem: int = 2) -> tuple[float, float]:
    """One new query per sequence against `context` cached keys and values."""
    kv_heads = kv_heads or heads
    flops = 4.0 * batch * heads * head_dim * context
    traffic = elem * batch * (2 * kv_heads * context * head_dim + 2 * heads * head_dim)
    return flops, float(traffic)


def rmsnorm(tokens: int, hidden: int, elem: int = 2) -> tuple[float, float]:
    """x * rsqrt(mean(x^2) + eps) * w: square, sum, scale, multiply by weight: ~4 FLOPs per element."""
    return 4.0 * tokens * hidden, float(elem * (2 * tokens * hidden + hidden))


def rope(tokens: int, heads: int, kv_heads: int, head_dim: int, elem: int = 2) -> tuple[float, float]:
    """q*cos + rotate_half(q)*sin for q and k: 3 FLOPs per element; reads q, k, cos, sin, writes q, k."""
    elems = tokens * (heads + kv_heads) * head_dim
    return 3.0 * elems, float(elem * (2 * elems + 2 * tokens * head_dim))


def silu_mul(tokens: int, intermediate: int, elem: int = 2) -> tuple[float, float]:
    """silu(g) * u: sigmoid (~4), multiply by g, multiply by u: counted as 6 FLOPs per element."""
    return 6.0 * tokens * intermediate, float(elem * 3 * tokens * intermediate)


def softmax(rows: int, cols: int, elem: int = 2) -> tuple[float, float]:
    """max, subtract, exp, sum, divide: counted as 5 FLOPs per element."""
    return 5.0 * rows * cols, float(elem * 2 * rows * cols)


def embedding(tokens: int, hidden: int, elem: int = 2) -> tuple[float, float]:
    return 0.0, float(elem * 2 * tokens * hidden + 8 * tokens)


def copy(nbytes: int) -> tuple[float, float]:
    """Device-to-device copy: read + write."""
    return 0.0, float(2 * nbytes)


def training_flops_per_token(matmul_params: int, layers: int, hidden: int, seq: int,
                             frozen_base: bool = False) -> tuple[float, str]:
    """Model FLOPs per trained token and the formula, as printed beside every TFLOP/s figure.

    Weights: 2N forward + 2N backward for input gradients + 2N for weight gradients (6N); a frozen base (LoRA,
    QLoRA) skips the weight gradients (4N; the adapters' own FLOPs are under 1% and left out). Attention scores
    and values: 4*s*h per token per layer forward, three times that with the backward (12*L*h*s), counted over all
    s keys (no causal halving, the usual MFU convention). Recomputation is not counted: it is overhead, not model work.
    """
    weight_factor = 4 if frozen_base else 6
    flops = weight_factor * matmul_params + 12 * layers * hidden * seq
    formula = (f"{weight_factor}*N + 12*L*h*s with N={matmul_params:,} matmul parameters, L={layers}, h={hidden}, "
               f"s={seq}; no causal halving; recomputation not counted")
    return float(flops), formula
