"""Predictions made before a measurement: the simulated engine, with its committed defaults and the catalog's GPU
entry, predicts vLLM on a GPU it has never been fitted on, for a measurement protocol fixed here in advance.
Prints a table per configuration and writes one JSON, which is committed before any measurement of that GPU lands
(so nobody, the author included, can tune the sim towards the answer).

    python benchmarks/sim_predictions.py --gpu h200 --out results/h200-sim-predictions.json

The protocol (what `benchmarks/serving_protocol.py` then runs on the GPU, and what the scoring reads):
- a server per configuration, launched with the sim's engine settings (max 256 sequences, 8,192 batched tokens,
  4,096-token context) so that prediction and measurement describe the same engine;
- capacity first: one closed loop of 256 users that send for 60 s; C is the rate at which requests complete
  between 20 and 60 s (the engine full and past its first wave; the drain after the last send left out, since a
  closed loop's last requests finish one by one on an emptying engine);
- Poisson points at 25, 50, 80, 95 and 110% of the measured C, each max(100 requests, 45 s of arrivals);
- closed loops of 1 user for 30 s and of 32 users for 45 s.
The points are sized so that all three configurations fit in 30 minutes of GPU time: max(60 s, 400 requests)
per point would take 19 minutes of Poisson points alone at 13B's predicted 3.3 req/s capacity. Prediction and
measurement use the same sizes.
Since the Poisson rates depend on a capacity not yet measured, Poisson predictions are given on a grid of rates
(fractions of the predicted capacity: 10-140%, in 5% steps from 70 to 120%) under the same sizing rule; a measured point is scored against the grid interpolated linearly at its offered rate.

Also predicted: the largest Poisson rate that meets the SLO (TTFT p90 <= 200 ms and TPOT p90 <= 15 ms) while the
server keeps up (achieved request rate at least 95% of offered), by bisection under the same sizing rule.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.sim.config import build_config  # noqa: E402
from backends.sim.replay import replay, summarize_replay  # noqa: E402
from loadgen.workload.distributions import LengthDistribution  # noqa: E402

SLO = {"ttft_p90_ms": 200.0, "tpot_p90_ms": 15.0}
KEEP_UP = 0.95  # achieved / offered request rate below which a point counts as fallen behind
POISSON_FRACTIONS = (0.25, 0.5, 0.8, 0.95, 1.1)
CAPACITY_USERS, CAPACITY_SECONDS, CAPACITY_WINDOW = 256, 60.0, (20.0, 60.0)
POISSON_SECONDS, POISSON_MIN_REQUESTS = 45.0, 100
CLOSED_SECONDS = {1: 30.0, 32: 45.0}
GRID = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.3, 1.4)
MAX_CONTEXT = 4096
ENGINE = {"max_num_seqs": 256, "max_batched_tokens": 8192}


@dataclass(frozen=True)
class ServingConfig:
    """One measured configuration: a catalog model and a workload (loadgen's --input-len / --output-len)."""

    name: str
    model: str
    input_len: str
    output_len: str
    description: str


CONFIGS = (
    ServingConfig("a", "7b", "512", "128", "Llama-2-7B shape, 512 in / 128 out (the H100 workload)"),
    ServingConfig("b", "8b", "lognormal:256,1.0", "lognormal:192,0.8",
                  "Llama-3-8B shape (GQA, 128k vocabulary), the chat scenario's lognormal lengths"),
    ServingConfig("c", "13b", "2048", "256", "Llama-2-13B shape, 2,048 in / 256 out"),
)


def poisson_requests(rate: float) -> int:
    """The protocol's point size: max(100 requests, 45 s of arrivals)."""
    return max(POISSON_MIN_REQUESTS, math.ceil(POISSON_SECONDS * rate))


def draw_lengths(cfg: ServingConfig, n: int, seed: int) -> list[tuple[int, int]]:
    """Lengths drawn as loadgen draws them (outputs first, inputs clipped to what the context leaves)."""
    rng = np.random.default_rng(seed)
    outs = LengthDistribution.parse(cfg.output_len).sample(rng, n, MAX_CONTEXT - 1)
    ins = LengthDistribution.parse(cfg.input_len).sample(rng, n, MAX_CONTEXT)
    return [(max(1, min(int(i), MAX_CONTEXT - int(o))), int(o)) for i, o in zip(ins, outs)]


def predict_poisson(sim, cfg: ServingConfig, rate: float, seed: int) -> dict:
    n = poisson_requests(rate)
    lengths = draw_lengths(cfg, n, seed + 1)
    out = summarize_replay(replay(sim, 0, 0, n, qps=rate, seed=seed, lengths=lengths))
    out["requests"] = n
    out["offered_per_s"] = rate
    out["kept_up"] = bool(out["requests_per_s"] >= KEEP_UP * rate)
    return out


def predict_closed(sim, cfg: ServingConfig, users: int, n: int, seed: int, warmup: int = 0) -> dict:
    lengths = draw_lengths(cfg, n, seed + 1)
    done = replay(sim, 0, 0, n, concurrency=users, lengths=lengths)
    # loadgen's warm-up is the first requests sent; the replay's records come in finishing order
    measured = sorted(done, key=lambda r: r.arrival_s)[warmup:]
    out = summarize_replay(measured)
    out["requests"] = n - warmup
    return out


def completion_rate(finishes: list[float], window: tuple[float, float] = CAPACITY_WINDOW) -> float:
    """Requests completed per second inside the window (seconds from the first send)."""
    lo, hi = window
    return sum(lo <= t < hi for t in finishes) / (hi - lo)


def predict_capacity(sim, cfg: ServingConfig, seed: int) -> dict:
    """The closed loop of 256 users, replayed until its last send is past CAPACITY_SECONDS."""
    n = 4 * CAPACITY_USERS
    while True:
        done = replay(sim, 0, 0, n, concurrency=CAPACITY_USERS, lengths=draw_lengths(cfg, n, seed + 1))
        if max(r.arrival_s for r in done) >= CAPACITY_SECONDS:
            break
        n *= 2
    sent = [r for r in done if r.arrival_s < CAPACITY_SECONDS]  # what a 60 s closed loop would send
    out = summarize_replay(sent)
    out["capacity_per_s"] = completion_rate([r.arrival_s + r.e2el_s for r in sent])
    out["requests"] = len(sent)
    return out


def meets_slo(point: dict) -> bool:
    return point["kept_up"] and all(point[k] <= v for k, v in SLO.items())


def max_rate_under_slo(sim, cfg: ServingConfig, capacity: float, seed: int) -> dict:
    """Bisection between a rate that meets the SLO and one that does not, to 2% of capacity."""
    lo, hi = 0.02 * capacity, 1.5 * capacity
    if not meets_slo(predict_poisson(sim, cfg, lo, seed)):
        return {"rate_per_s": None, "reason": f"the SLO fails already at {lo:.2f} req/s"}
    while hi - lo > 0.02 * capacity:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if meets_slo(predict_poisson(sim, cfg, mid, seed)) else (lo, mid)
    point = predict_poisson(sim, cfg, lo, seed)
    return {"rate_per_s": lo, "at_that_rate": point}


def git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", default="h200", help="catalog GPU the predictions stand for (default h200)")
    p.add_argument("--configs", default="a,b,c", help="which configurations (default a,b,c)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    wanted = set(args.configs.split(","))
    report: dict = {"benchmark": "sim_predictions", "label": "SIMULATED predictions, made before the measurement",
                    "gpu": args.gpu, "git_sha_of_the_sim": git_sha(), "made_at_unix": time.time(),
                    "slo": SLO, "keep_up_fraction": KEEP_UP, "engine": {**ENGINE, "max_model_len": MAX_CONTEXT},
                    "protocol": {"capacity": {"users": CAPACITY_USERS, "send_for_s": CAPACITY_SECONDS,
                                              "completions_counted_in_s": CAPACITY_WINDOW},
                                 "poisson_fractions_of_measured_capacity": POISSON_FRACTIONS,
                                 "poisson_requests": "max(100, ceil(45 s x rate))",
                                 "closed_1": "30 s", "closed_32": "45 s",
                                 "scoring": "Poisson: grid interpolated linearly at the measured offered rate"},
                    "configs": []}
    from tabulate import tabulate

    for cfg in CONFIGS:
        if cfg.name not in wanted:
            continue
        sim = build_config(cfg.model, args.gpu, 1, **ENGINE)
        t0 = time.perf_counter()
        capacity_point = predict_capacity(sim, cfg, args.seed)
        capacity = capacity_point["capacity_per_s"]
        # closed loops run for a duration: as many requests as the loop completes in it (one short run to know)
        closed = {}
        for users, seconds in CLOSED_SECONDS.items():
            probe = predict_closed(sim, cfg, users, max(4 * users, 20), args.seed)
            closed[str(users)] = predict_closed(sim, cfg, users, max(users, math.ceil(seconds * probe["requests_per_s"])),
                                                args.seed)
        grid = [{"fraction_of_predicted_capacity": f, **predict_poisson(sim, cfg, f * capacity, args.seed + k)}
                for k, f in enumerate(GRID)]
        slo = max_rate_under_slo(sim, cfg, capacity, args.seed)
        entry = {**asdict(cfg), "cost_model": sim.cost_model, "predicted_capacity_per_s": capacity,
                 "capacity_point": capacity_point, "closed": closed,
                 "poisson_at_predicted_fractions": {f"{f:g}": next(g for g in grid
                                                                    if g["fraction_of_predicted_capacity"] == f)
                                                    for f in POISSON_FRACTIONS},
                 "poisson_grid": grid, "max_rate_under_slo": slo, "wall_s": None}
        entry["wall_s"] = time.perf_counter() - t0
        report["configs"].append(entry)
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"config {cfg.name}: {cfg.description}; SIMULATED on 1x {args.gpu}; predicted capacity "
              f"{capacity:.2f} req/s; max rate under the SLO {slo['rate_per_s'] or 0:.2f} req/s "
              f"({entry['wall_s']:.0f} s to predict)")
        rows = [[f"poisson {f}", f"{pt['offered_per_s']:.2f}", f"{pt['ttft_p50_ms']:.1f}", f"{pt['ttft_p90_ms']:.1f}",
                 f"{pt['tpot_p50_ms']:.2f}", f"{pt['tpot_p90_ms']:.2f}", f"{pt['e2el_p50_ms']:.0f}",
                 f"{pt['output_tok_s']:.0f}"] for f, pt in entry["poisson_at_predicted_fractions"].items()]
        rows += [[f"closed {u}", f"{pt['requests_per_s']:.2f}", f"{pt['ttft_p50_ms']:.1f}", f"{pt['ttft_p90_ms']:.1f}",
                  f"{pt['tpot_p50_ms']:.2f}", f"{pt['tpot_p90_ms']:.2f}", f"{pt['e2el_p50_ms']:.0f}",
                  f"{pt['output_tok_s']:.0f}"] for u, pt in {**closed, "256": capacity_point}.items()]
        print(tabulate(rows, headers=["point", "req/s", "TTFT p50 ms", "TTFT p90 ms", "TPOT p50 ms", "TPOT p90 ms",
                                      "E2EL p50 ms", "out tok/s"], disable_numparse=True))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
