"""What the simulated engine has been checked against, and how far off it was: one index built from the committed
validation results, which `loadgen plan` reads to say how near each prediction is to a measured configuration.

    python benchmarks/sim_validation_index.py            # writes results/sim-validation-index.json

Each entry is one measured configuration (GPU, model, tensor-parallel degree, engine settings, workload) with the
sim's relative errors there (signed per point, predicted / measured - 1; medians and maxima of their absolute
values). Only files made with the sim's current model (its default constants, `current: true`) give the errors a
plan quotes; files of earlier models are listed as superseded so the history stays visible. The H200 entries are
the pre-registered predictions (the sim's defaults, committed before the measurement), scored by
benchmarks/sim_score.py, including the largest rate that met the SLO there, predicted and measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.sim.roofline import EngineCostParams  # noqa: E402
from scenarios.catalog import get_model  # noqa: E402

H100_FILES = sorted((ROOT / "results").glob("h100-sim-validation*.json"))
H200_SCORE = ROOT / "results" / "h200-sim-score.json"
H200_PREDICTIONS = ROOT / "results" / "h200-sim-predictions.json"
PLAN_CHECK = ROOT / "results" / "h100-plan-vs-measured.json"
# The H100 measurements (benchmarks/vllm_serving.py): Llama-2-7B shape, 512 in / 128 out, TP 1, vLLM's engine
# at its defaults with --max-model-len 4096; the sim replays them with its own defaults (256 sequences, 8,192 tokens).
H100_WORKLOAD = {"input_len": "512", "output_len": "128"}
ENGINE = {"max_num_seqs": 256, "max_batched_tokens": 8192}
METRICS = ("ttft_p50_ms", "tpot_p50_ms", "output_tok_s")


def _is_current(data: dict) -> bool:
    """Made with the sim's present defaults: the roofline cost model and today's fitted constants."""
    d = EngineCostParams()
    fitted = data.get("fitted", {})
    return (data.get("cost_model", "").startswith("roofline")
            and abs(fitted.get("step_overhead_ms", -1) - d.step_overhead_s * 1e3) < 1e-9
            and abs(fitted.get("request_overhead_ms", -1) - d.request_overhead_s * 1e3) < 1e-9
            and abs(fitted.get("frontend_token_ms", -1) - d.frontend_token_s * 1e3) < 1e-9
            and fitted.get("scheduling_lag_steps", -1) == d.scheduling_lag_steps)


def _point_error(point: dict) -> dict:
    """Signed relative errors of one scored point (throughput recomputed: older files lack it)."""
    err = dict(point.get("error") or {})
    m, p = point.get("measured", {}), point.get("predicted", {})
    if "output_tok_s" not in err and m.get("output_tok_s") and p.get("output_tok_s") is not None:
        err["output_tok_s"] = p["output_tok_s"] / m["output_tok_s"] - 1
    return {k: err[k] for k in METRICS if k in err}


def _summary(errors: list[dict]) -> tuple[dict, dict]:
    med, mx = {}, {}
    for k in METRICS:
        vals = [abs(e[k]) for e in errors if k in e]
        if vals:
            med[k], mx[k] = statistics.median(vals), max(vals)
    return med, mx


def h100_entries() -> list[dict]:
    out = []
    for path in H100_FILES:
        data = json.loads(path.read_text())
        scored = [p for p in data["points"] if p.get("scored")]
        errors = [_point_error(p) for p in scored]
        med, mx = _summary(errors)
        graph = data.get("cuda_graph_max_tokens") or 512
        out.append({
            "source": str(path.relative_to(ROOT)), "gpu": "h100-sxm", "gpu_measured": "NVIDIA H100 80GB HBM3",
            "model": get_model("7b").name, "tp": 1, "engine": {**ENGINE, "cuda_graph_max_tokens": graph},
            "workload": H100_WORKLOAD, "current": _is_current(data),
            "note": ("the sim's current model" if _is_current(data) else "an earlier model of the sim (superseded)")
                    + ("" if graph == 512 else f"; vLLM and the sim with CUDA graphs up to {graph} tokens"),
            "points": [{"kind": p["kind"], "value": p["value"], "error": e} for p, e in zip(scored, errors)],
            "median_abs_error": med, "max_abs_error": mx,
        })
    return out


def h200_entries() -> list[dict]:
    score = json.loads(H200_SCORE.read_text())
    preds = {c["name"]: c for c in json.loads(H200_PREDICTIONS.read_text())["configs"]}
    out = []
    for c in score["configs"]:
        pred = preds[c["config"]]
        points = [{"kind": "point", "value": p["point"],
                   "error": {k: p["error_pre_registered"][k] for k in METRICS if k in p["error_pre_registered"]}}
                  for p in c["points"] if p.get("below_saturation")]
        med, mx = _summary([p["error"] for p in points])
        rate = c["max_rate_under_slo"]
        out.append({
            "source": str(H200_SCORE.relative_to(ROOT)), "gpu": "h200", "gpu_measured": c["gpu_measured"],
            "model": get_model(pred["model"]).name, "tp": 1, "engine": {**ENGINE, "cuda_graph_max_tokens": 512},
            "workload": {"input_len": pred["input_len"], "output_len": pred["output_len"]}, "current": True,
            "note": "pre-registered predictions with the sim's defaults, scored below saturation",
            "points": points, "median_abs_error": med, "max_abs_error": mx,
            "capacity_per_s": {"predicted": c["predicted_capacity_per_s"], "measured": c["measured_capacity_per_s"],
                               "error": c["predicted_capacity_per_s"] / c["measured_capacity_per_s"] - 1},
            "max_rate_under_slo": {"slo": score["slo"], **rate},
        })
    return out


def plan_checks() -> list[dict]:
    """benchmarks/plan_vs_measured.py's comparisons, where that file exists: the plan's max rate vs the sweep's."""
    if not PLAN_CHECK.exists():
        return []
    data = json.loads(PLAN_CHECK.read_text())
    keep = ("gpu", "model", "tp", "slo", "predicted_per_s", "predicted_label", "measured",
            "difference_to_interpolated_crossing", "sweeps_agreeing")
    return [{"source": str(PLAN_CHECK.relative_to(ROOT)), **{k: c[k] for k in keep if k in c}}
            for c in data.get("checks", [])]


def build() -> dict:
    entries = h100_entries() + h200_entries()
    return {
        "benchmark": "sim_validation_index",
        "what": "configurations the simulated engine was compared with a measured vLLM on, and its relative errors "
                "there (predicted / measured - 1); `current` entries were made with the sim's present model",
        "command": "python benchmarks/sim_validation_index.py",
        "measured": {"gpus": sorted({e["gpu"] for e in entries if e["current"]}),
                     "models": sorted({e["model"] for e in entries if e["current"]}),
                     "tp": sorted({e["tp"] for e in entries if e["current"]})},
        "entries": entries,
        "max_rate_checks": plan_checks(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "results" / "sim-validation-index.json"))
    args = p.parse_args()
    index = build()
    Path(args.out).write_text(json.dumps(index, indent=1) + "\n")
    from tabulate import tabulate

    rows = [[e["source"].removeprefix("results/"), e["gpu"], e["model"], e["tp"],
             f"{e['workload']['input_len']}/{e['workload']['output_len']}", "yes" if e["current"] else "superseded",
             len(e["points"]),
             *(f"{e['median_abs_error'].get(k, float('nan')):.1%}" for k in METRICS),
             *(f"{e['max_abs_error'].get(k, float('nan')):.1%}" for k in METRICS)] for e in index["entries"]]
    print(tabulate(rows, headers=["source", "gpu", "model", "tp", "in/out", "current", "points",
                                  "med TTFT", "med TPOT", "med tok/s", "max TTFT", "max TPOT", "max tok/s"],
                   disable_numparse=True))
    print(f"measured (current model): {index['measured']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
