"""`loadgen plan`'s predictions against the committed H100 measurements (vLLM 0.22.0, Llama-2-7B shape, 512 in /
128 out, TP 1; benchmarks/vllm_serving.py's result files): the predicted max rate under an SLO against the rate the
measured Poisson sweeps reached, and the predicted KV-cache capacity against vLLM's own.

    python benchmarks/plan_vs_measured.py            # writes results/h100-plan-vs-measured.json

Measured max rate: the sweeps measured Poisson points at 1, 2, 4, 8, 16 (and once 32) req/s. A rate *met* the SLO
when loadgen's p90 of every limited metric was within its limit and the server kept up. These older summaries lack
loadgen's pace verdict, so keeping up is judged from the run's rate: completed requests over its window (first send
to last finish, so it includes one request's drain) at least (1 - 5% - 3/sqrt(n)) of n / (n / offered + E2EL p50),
the rate an engine that keeps up shows over such a window, less the tolerance and the Poisson count's noise (a
20-request point's draw alone spans +-22%); the measured max rate lies between the highest rate every run met and the lowest rate a run failed.
The crossing is also estimated by linear interpolation of each metric's p90, averaged over the runs at each rate,
between the measured rates around the limit (an estimate between measured points, labelled as such).

Measured KV-cache capacity: vLLM's `vllm:kv_cache_usage_perc` at its maximum during a closed loop of one user is one
request at its full 640 tokens (40 blocks of 16), so the cache holds 40 / usage blocks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.sim.roofline import memory_plan  # noqa: E402
from loadgen.plan.planner import PlanRequest, run_plan  # noqa: E402
from loadgen.plan.search import PointSize, Slo  # noqa: E402
from loadgen.plan.space import BLOCK_SIZE, SearchSpace  # noqa: E402
from loadgen.plan.workload import from_distributions  # noqa: E402
from scenarios.catalog import get_gpu, get_model  # noqa: E402

# The sweeps of the sim's default engine settings; graph1024 ran vLLM with larger CUDA graphs (another engine).
SWEEPS = {
    "fixed (4th session)": ["h100-vllm-serving-fixed-a.json", "h100-vllm-serving-fixed-b.json"],
    "pinned (4th session)": ["h100-vllm-serving-pinned-a.json", "h100-vllm-serving-pinned-b.json"],
    "paired (3rd session)": ["h100-vllm-serving-paired-a.json", "h100-vllm-serving-paired-b.json"],
    "trace (3rd session)": ["h100-vllm-serving-trace-a.json", "h100-vllm-serving-trace-b.json"],
    "phases": ["h100-vllm-serving-phases.json"],
    "replays": ["h100-vllm-serving-replays.json"],
    "ttft-check": ["h100-vllm-serving-ttft-check.json"],
    "poisson (1st session)": ["h100-vllm-serving-poisson.json"],
}
SLOS = [{"ttft": 100.0, "tpot": 10.0}, {"ttft": 100.0, "tpot": 8.0}, {"ttft": 100.0, "tpot": 12.0}]
PERCENTILE = 90.0
TOLERANCE = 0.05
FULL_BLOCKS = -(-640 // BLOCK_SIZE)


def measured_points() -> dict[str, list[dict]]:
    """Sweep name -> its Poisson points (rate, p90s, achieved rate)."""
    out: dict[str, list[dict]] = {}
    for name, files in SWEEPS.items():
        for f in files:
            for p in json.loads((ROOT / "results" / f).read_text())["points"]:
                s = (p.get("loadgen") or {}).get("summary")
                if p["kind"] != "poisson" or not s:
                    continue
                out.setdefault(name, []).append({
                    "file": f, "rate": float(p["value"]), "ttft": s["ttft_ms"]["p90"], "tpot": s["tpot_ms"]["p90"],
                    "e2el": s["e2el_ms"]["p90"], "e2el_p50": s["e2el_ms"]["p50"], "n": s["requests"]["completed"],
                    "achieved": s["throughput"]["requests_per_s"]})
    return out


def kept_up(point: dict) -> bool:
    n = point["n"]
    expected = n / (n / point["rate"] + point["e2el_p50"] / 1e3)
    return point["achieved"] >= expected * (1 - TOLERANCE - 3 / n**0.5)


def meets(point: dict, limits: dict[str, float]) -> bool:
    return kept_up(point) and all(point[k] <= v for k, v in limits.items())


def bracket(points: list[dict], limits: dict[str, float]) -> dict:
    rates = sorted({p["rate"] for p in points})
    verdict = {r: all(meets(p, limits) for p in points if p["rate"] == r) for r in rates}
    failed = [r for r in rates if not verdict[r]]
    failed_at = min(failed) if failed else None
    met = [r for r in rates if verdict[r] and (failed_at is None or r < failed_at)]
    met_at = max(met) if met else None
    # the rate where the first limit is crossed: each metric's p90, averaged over the runs at a rate, interpolated
    # linearly between the two measured rates around the first rate whose average is over the limit
    cands = []
    for k, limit in limits.items():
        curve = [(r, statistics.mean(p[k] for p in points if p["rate"] == r)) for r in rates]
        for (r0, v0), (r1, v1) in itertools.pairwise(curve):
            if v0 <= limit < v1:
                cands.append(r0 + (limit - v0) / (v1 - v0) * (r1 - r0))
                break
    crossing = min(cands) if cands else None
    return {"met_at_per_s": met_at, "failed_at_per_s": failed_at, "interpolated_crossing_per_s": crossing}


def kv_check() -> dict:
    model, gpu = get_model("7b"), get_gpu("h100")
    predicted = memory_plan(model, gpu, 1).kv_capacity_tokens
    seen = {}
    for files in SWEEPS.values():
        for f in files + ["h100-vllm-serving-closed.json"]:
            for p in json.loads((ROOT / "results" / f).read_text())["points"]:
                sm = ((p.get("loadgen") or {}).get("summary") or {}).get("server_metrics") or {}
                usage = (sm.get("kv_cache_usage") or {}).get("max")
                if p["kind"] == "closed" and p["value"] == 1 and usage:
                    seen[f] = round(FULL_BLOCKS / usage) * BLOCK_SIZE
    measured = sorted(set(seen.values()))
    return {"predicted_kv_tokens": predicted, "measured_kv_tokens": measured, "per_file": seen,
            "error": [predicted / m - 1 for m in measured],
            "how": "vLLM's kv_cache_usage_perc maximum at a closed loop of one 512+128-token request = "
                   f"{FULL_BLOCKS} blocks of {BLOCK_SIZE}; capacity = {FULL_BLOCKS} / usage blocks"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "h100-plan-vs-measured.json"))
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    sweeps = measured_points()
    pooled = [p for pts in sweeps.values() for p in pts]
    model = get_model("7b")
    workload = from_distributions("512", "128", 4000, 0, model.max_context)
    space = SearchSpace((get_gpu("h100"),), (1,), (256,), (8192,), 1)
    checks, rows = [], []
    for limits in SLOS:
        t0 = time.perf_counter()
        result = run_plan(PlanRequest(model, space, workload, Slo(limits, PERCENTILE), PointSize()), jobs=args.jobs,
                          progress=False)
        wall = time.perf_counter() - t0
        plan = result.feasible[0] if result.feasible else None
        predicted = plan.engine_max_rate_per_s if plan else None
        per_sweep = {name: bracket(pts, limits) for name, pts in sweeps.items()}
        overall = bracket(pooled, limits)
        # a sweep agrees when it met the SLO at a rate at or below the prediction and failed above it (or measured
        # nothing above it that failed)
        inside = [name for name, b in per_sweep.items() if predicted is not None and b["met_at_per_s"] is not None
                  and b["met_at_per_s"] <= predicted and (b["failed_at_per_s"] is None or predicted < b["failed_at_per_s"])]
        x = overall["interpolated_crossing_per_s"]
        check = {"gpu": "h100-sxm", "model": model.name, "tp": 1,
                 "slo": {f"{k}_p{PERCENTILE:g}_ms": v for k, v in limits.items()},
                 "predicted_per_s": predicted, "predicted_label": "SIMULATED (loadgen plan)",
                 "measured": overall, "per_sweep": per_sweep,
                 "sweeps_agreeing": f"{len(inside)} of {len(per_sweep)}",
                 "difference_to_interpolated_crossing": None if x is None or predicted is None else predicted / x - 1,
                 "plan_wall_s": wall}
        checks.append(check)
        rows.append([", ".join(f"{k} p90 <= {v:g} ms" for k, v in limits.items()),
                     f"{predicted:.2f}" if predicted else "none",
                     f"{overall['met_at_per_s']} / {overall['failed_at_per_s']}",
                     f"{x:.2f}" if x else "n/a",
                     f"{check['difference_to_interpolated_crossing']:+.1%}" if x and predicted else "n/a",
                     check["sweeps_agreeing"]])
    kv = kv_check()
    report = {"benchmark": "plan_vs_measured", "label": "predicted = SIMULATED (loadgen plan); measured = vLLM 0.22.0 "
              "on one H100 80GB HBM3 (committed runs)", "command": "python benchmarks/plan_vs_measured.py",
              "keep_up": "achieved >= n / (n / offered + E2EL p50) x (1 - 5% - 3/sqrt(n))", "checks": checks, "kv_cache": kv,
              "measured_points": {k: v for k, v in sweeps.items()}}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    from tabulate import tabulate

    print(tabulate(rows, headers=["SLO (and keeping up)", "plan max req/s (SIMULATED)", "measured met / failed req/s",
                                  "measured crossing (interp.)", "plan vs crossing", "sweeps agreeing"],
                   disable_numparse=True))
    print(f"KV cache: predicted {kv['predicted_kv_tokens']:,} tokens (SIMULATED); vLLM's "
          f"{', '.join(f'{m:,}' for m in kv['measured_kv_tokens'])} tokens "
          f"({', '.join(f'{e:+.1%}' for e in kv['error'])}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
