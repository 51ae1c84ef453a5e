"""From one engine's predicted max rate to a deployment's figures, and the order they are ranked in.

Replicas scale the rate linearly: a load balancer that routes each request to a replica at random splits a Poisson
stream into independent Poisson streams of rate/R, so R replicas of an engine that serves r under the SLO serve
R x r (round-robin routing is smoother and does at least as well; gamma arrivals split only approximately).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loadgen.errors import LoadgenError

RANK_KEYS = ("cost", "goodput-per-gpu", "max-rate", "gpus")


@dataclass(frozen=True)
class Scores:
    """A deployment's predicted figures (SIMULATED). `operating_rate_per_s`: the target rate when one is given,
    else the max rate (the deployment fully loaded)."""

    gpus: int
    max_rate_per_s: float
    operating_rate_per_s: float
    goodput_per_s: float
    goodput_per_gpu: float
    output_tok_s: float
    cost_per_hour: float | None
    cost_per_m_output_tokens: float | None
    rate_headroom: float | None  # max rate / target - 1 (None without a target)


def score(engine_max_rate: float, replicas: int, tp: int, slo_fraction: float, mean_output_tokens: float,
          price_per_gpu_hour: float | None, target_rate: float | None = None) -> Scores:
    """Goodput counts the requests meeting every SLO limit at the operating rate; cost per million output tokens
    is what the GPUs cost per hour over the output tokens they produce in that hour at the operating rate."""
    gpus = tp * replicas
    max_rate = engine_max_rate * replicas
    rate = target_rate if target_rate is not None else max_rate
    goodput = rate * slo_fraction
    tok_s = rate * mean_output_tokens
    cost_h = gpus * price_per_gpu_hour if price_per_gpu_hour is not None else None
    cost_m = cost_h / (tok_s * 3600) * 1e6 if cost_h is not None and tok_s > 0 else None
    headroom = max_rate / target_rate - 1 if target_rate else None
    return Scores(gpus, max_rate, rate, goodput, goodput / gpus, tok_s, cost_h, cost_m, headroom)


def replicas_for(target_rate: float, engine_max_rate: float) -> int:
    """The fewest replicas whose summed max rate reaches the target (a hair of float slack)."""
    return max(1, math.ceil(target_rate / engine_max_rate - 1e-9))


def sort_key(rank_by: str):
    """Best first. Ties break towards fewer GPUs, then a higher max rate."""
    if rank_by not in RANK_KEYS:
        raise LoadgenError(f"unknown --rank {rank_by!r}; choose one of {', '.join(RANK_KEYS)}")

    def key(s: Scores) -> tuple:
        cost = s.cost_per_m_output_tokens if s.cost_per_m_output_tokens is not None else math.inf
        primary = {"cost": cost, "goodput-per-gpu": -s.goodput_per_gpu, "max-rate": -s.max_rate_per_s,
                   "gpus": s.gpus}[rank_by]
        # replicas of one engine tie on cost and goodput per GPU but for the last bits of their floats
        return (_sig(primary), s.gpus, -s.max_rate_per_s)
    return key


def _sig(x: float, digits: int = 9) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def parse_prices(text: str | None, gpu_keys: dict[str, str]) -> dict[str, float]:
    """'h100=2.5,h200=3.1' -> catalog key -> $ per GPU-hour; `gpu_keys` maps every name and alias to its key."""
    prices: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = part.partition("=")
        key = gpu_keys.get(name.strip().lower())
        if not sep or key is None:
            raise LoadgenError(f"bad --gpu-price {part!r}: write GPU=DOLLARS_PER_GPU_HOUR with GPU one of "
                               f"{', '.join(sorted(gpu_keys))}, e.g. h100=2.5")
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not price > 0 or not math.isfinite(price):
            raise LoadgenError(f"bad --gpu-price {part!r}: the price must be a positive number of dollars per GPU-hour")
        prices[key] = price
    return prices
