"""Score pre-registered sim predictions (benchmarks/sim_predictions.py) against the protocol's measurements
(benchmarks/serving_protocol.py): per point, the error of TTFT p50/p90, TPOT p50/p90, E2EL p50 and output
throughput, against load; the predicted and measured max rate under the SLO. Three sets of predictions per point:

- `pre-registered`: the committed predictions file, Poisson grid interpolated at the measured offered rate;
- `same model, measured arrivals`: the sim with the same pre-registered defaults replaying the measured run's own
  send times and lengths (no fitted information; removes the noise of one Poisson draw against another);
- `refit`: the two constants the H100 fit used (GPU fixed time per step, per-request latency) refitted on the
  closed loop of one user of each configuration, then the measured arrivals replayed (only with --refit);
- `trace launch` (a diagnosis, not a prediction): the refit sim with its CPU launch constants read from the step
  trace of the same measurement (--trace, a step_trace_report.py JSON per config), to show how much of the error
  the launch costs explain.

    python benchmarks/sim_score.py --predictions results/h200-sim-predictions.json \
        --measured results/h200-vllm-protocol-a.json results/h200-vllm-protocol-b.json ... --refit \
        --out results/h200-sim-score.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sim_predictions import ENGINE, KEEP_UP, SLO  # noqa: E402

from backends.sim.config import build_config  # noqa: E402
from backends.sim.replay import replay, summarize_replay  # noqa: E402

METRICS = ("ttft_p50_ms", "ttft_p90_ms", "tpot_p50_ms", "tpot_p90_ms", "e2el_p50_ms", "output_tok_s")


def measured_metrics(point: dict) -> dict:
    s = point["summary"]
    return {"ttft_p50_ms": s["ttft_ms"]["p50"], "ttft_p90_ms": s["ttft_ms"]["p90"],
            "tpot_p50_ms": s["tpot_ms"]["p50"], "tpot_p90_ms": s["tpot_ms"]["p90"],
            "e2el_p50_ms": s["e2el_ms"]["p50"], "output_tok_s": s["throughput"]["output_tokens_per_s"],
            "requests_per_s": s["throughput"]["requests_per_s"]}


def interpolate(grid: list[dict], rate: float) -> dict:
    """Linear interpolation of every metric over the predicted grid's offered rates (clamped at its ends)."""
    rates = np.array([g["offered_per_s"] for g in grid])
    order = np.argsort(rates)
    return {m: float(np.interp(rate, rates[order], np.array([g[m] for g in grid])[order]))
            for m in (*METRICS, "requests_per_s")}


def replay_measured(sim, point: dict) -> dict:
    """The sim on the measured run's own arrivals and lengths (closed loops: its users and request count)."""
    fields = point["requests_fields"]
    rows = sorted(point["requests"], key=lambda r: r[0])
    lengths = [(r[fields.index("input_tokens")], r[fields.index("output_tokens")]) for r in rows]
    if point["kind"] == "poisson":
        done = replay(sim, 0, 0, 0, send_times=[r[0] - rows[0][0] for r in rows], lengths=lengths)
    else:
        users = point["users"]
        warm = point["summary"]["requests"].get("warmup", 0) if isinstance(point["summary"].get("requests"), dict) else 0
        done = replay(sim, 0, 0, len(rows) + warm, concurrency=users, lengths=lengths[:1] * warm + lengths)
        done = sorted(done, key=lambda r: r.arrival_s)[warm:]
    return summarize_replay(done)


def trace_launch(sim, trace: dict):
    """The sim's launch constants as the H100 ones were derived (backends/sim/roofline.py's comments): a step's fixed
    launch is the decode-only intercept plus its output processing; per layer, what a prefill step (piecewise
    graphs) or a step off the graph costs beyond that; per sequence, the fitted slopes."""
    fits, layers = trace["launch_fits"], sim.model.num_layers
    decode, prefill, off = fits["decode only"], fits["with a prefill"], fits["off the graph"]
    launch_ms = decode["launch_intercept_ms"] + decode["mean_output_ms"]
    return replace(sim, cost=replace(
        sim.cost, launch_s=launch_ms / 1e3, launch_per_seq_s=decode["launch_per_sequence_ms"] / 1e3,
        piecewise_layer_s=max(0.0, (prefill["mean_launch_ms"] + prefill["mean_output_ms"] - launch_ms) / layers / 1e3),
        eager_layer_overhead_s=max(0.0, (off["launch_intercept_ms"] + off["mean_output_ms"] - launch_ms) / layers / 1e3),
        eager_launch_per_seq_s=max(0.0, off["launch_per_sequence_ms"] - decode["launch_per_sequence_ms"]) / 1e3))


def kept_up(point: dict, offered: float) -> bool:
    """From loadgen's pace (completions against arrivals while requests arrived) when the run has it; else the
    whole window's completion rate, which the drain after the last send lowers."""
    pace = point["summary"].get("pace")
    if pace and pace.get("offered_per_s"):
        return pace["achieved_per_s"] >= KEEP_UP * pace["offered_per_s"]
    return measured_metrics(point)["requests_per_s"] >= KEEP_UP * offered


def errors(pred: dict, meas: dict) -> dict:
    return {m: pred[m] / meas[m] - 1 for m in METRICS if meas.get(m)}


def meets_slo(m: dict) -> bool:
    return all(m[k] <= v for k, v in SLO.items())


def refit(base, closed_1: dict) -> tuple[object, dict]:
    """Grid search of the two constants on the one-user closed loop (squared relative TTFT and TPOT medians)."""
    meas = measured_metrics(closed_1)

    def cfg(step_ms: float, request_ms: float):
        return replace(base, cost=replace(base.cost, step_overhead_s=step_ms / 1e3, request_overhead_s=request_ms / 1e3))

    def loss(step_ms: float, request_ms: float) -> float:
        pred = replay_measured(cfg(step_ms, request_ms), {**closed_1, "requests": closed_1["requests"][:40]})
        return (pred["ttft_p50_ms"] / meas["ttft_p50_ms"] - 1) ** 2 + (pred["tpot_p50_ms"] / meas["tpot_p50_ms"] - 1) ** 2

    coarse = min(itertools.product([x / 5 for x in range(0, 16)], [float(x) for x in range(0, 31, 2)]),
                 key=lambda c: loss(*c))
    fine = min(itertools.product([max(0.0, round(coarse[0] + d / 10, 2)) for d in (-1, 0, 1)],
                                 [max(0.0, coarse[1] + d) for d in (-1, 0, 1)]), key=lambda c: loss(*c))
    return cfg(*fine), {"step_overhead_ms": fine[0], "request_overhead_ms": fine[1]}


def measured_max_rate(points: list[dict]) -> dict:
    """Between the highest measured Poisson rate that met the SLO (and kept up) and the lowest that did not."""
    pts = sorted((p for p in points if p["kind"] == "poisson" and p.get("summary")), key=lambda p: p["offered_per_s"])
    ok = [p["offered_per_s"] for p in pts if meets_slo(measured_metrics(p)) and kept_up(p, p["offered_per_s"])]
    bad = [p["offered_per_s"] for p in pts if p["offered_per_s"] not in ok]
    low = max(ok) if ok else None
    high = min((r for r in bad if low is None or r > low), default=None)
    return {"met_at_per_s": low, "failed_at_per_s": high}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--predictions", required=True)
    p.add_argument("--measured", nargs="+", required=True, help="serving_protocol.py JSON files, one per config")
    p.add_argument("--refit", action="store_true", help="also refit two constants on each config's closed 1")
    p.add_argument("--trace", help="step-trace JSON per config, with {config} for its name, e.g. "
                                    "results/h200-vllm-step-trace-{config}.json (the trace-launch diagnosis)")
    p.add_argument("--out")
    args = p.parse_args()
    preds = json.loads(Path(args.predictions).read_text())
    by_name = {c["name"]: c for c in preds["configs"]}
    gpu = preds["gpu"]
    report: dict = {"benchmark": "sim_score", "predictions": args.predictions, "slo": SLO, "configs": []}
    from tabulate import tabulate

    for path in args.measured:
        meas = json.loads(Path(path).read_text())
        pred = by_name[meas["config"]]
        sim = build_config(pred["model"], gpu, 1, **ENGINE)
        closed_1 = next((p for p in meas["points"] if p["kind"] == "closed" and p["users"] == 1 and p.get("summary")), None)
        fitted, constants = refit(sim, closed_1) if args.refit and closed_1 else (None, None)
        traced = None
        if args.trace and fitted is not None:
            traced = trace_launch(fitted, json.loads(Path(args.trace.format(config=meas["config"])).read_text()))
        entry = {"config": meas["config"], "measured_file": path, "gpu_measured": meas.get("gpu"),
                 "measured_capacity_per_s": meas.get("measured_capacity_per_s"),
                 "predicted_capacity_per_s": pred["predicted_capacity_per_s"], "refit_constants": constants,
                 "points": []}
        rows = []
        for point in meas["points"]:
            if not point.get("summary"):
                continue
            m = measured_metrics(point)
            if point["kind"] == "poisson":
                label, offered = f"poisson {point['fraction']:g}C", point["offered_per_s"]
                pre = interpolate(pred["poisson_grid"], offered)
                below = point["fraction"] < 1 and kept_up(point, offered)
            elif point["kind"] == "closed":
                label, offered = f"closed {point['users']}", None
                pre = pred["closed"][str(point["users"])]
                below = True
            else:
                label, offered, below = f"closed {point['users']} (capacity)", None, False
                pre = pred["capacity_point"]
            same = replay_measured(sim, point)
            row = {"point": label, "offered_per_s": offered, "below_saturation": below, "measured": m,
                   "pre_registered": {k: pre[k] for k in (*METRICS, "requests_per_s")},
                   "error_pre_registered": errors(pre, m),
                   "same_model_measured_arrivals": same, "error_same_model": errors(same, m)}
            if fitted is not None:
                row["refit"] = replay_measured(fitted, point)
                row["error_refit"] = errors(row["refit"], m)
            if traced is not None:
                row["trace_launch"] = replay_measured(traced, point)
                row["error_trace_launch"] = errors(row["trace_launch"], m)
            entry["points"].append(row)
            rows.append([label, f"{m['requests_per_s']:.2f}",
                         *(f"{m[k]:.1f} {row['error_pre_registered'][k]:+.0%}"
                           + (f" / {row['error_refit'][k]:+.0%}" if fitted is not None else "")
                           + (f" / {row['error_trace_launch'][k]:+.0%}" if traced is not None else "")
                           for k in METRICS),
                         "" if below else "saturated"])
        scored = [r for r in entry["points"] if r["below_saturation"]]
        keys = ("error_pre_registered", "error_same_model", *(("error_refit",) if fitted is not None else ()),
                *(("error_trace_launch",) if traced is not None else ()))
        for key in keys:
            entry[f"max_abs_{key}"] = {m: max((abs(r[key][m]) for r in scored if m in r[key]), default=None)
                                       for m in METRICS}
            entry[f"median_abs_{key}"] = {m: float(np.median([abs(r[key][m]) for r in scored if m in r[key]]))
                                          if scored else None for m in METRICS}
        entry["max_rate_under_slo"] = {"predicted_per_s": pred["max_rate_under_slo"]["rate_per_s"],
                                       "measured": measured_max_rate(meas["points"])}
        report["configs"].append(entry)
        cap_m, cap_p = entry["measured_capacity_per_s"], entry["predicted_capacity_per_s"]
        print(f"config {meas['config']} ({pred['description']}) on {meas.get('gpu')}: capacity measured "
              f"{cap_m:.2f} req/s, predicted {cap_p:.2f} ({cap_p / cap_m - 1:+.1%})"
              + (f"; refit on closed 1: {constants}" if constants else ""))
        print(tabulate(rows, headers=["point", "req/s", *METRICS, ""], disable_numparse=True))
        mr = entry["max_rate_under_slo"]
        print(f"max rate under the SLO: predicted {mr['predicted_per_s']}, measured met at "
              f"{mr['measured']['met_at_per_s']} and failed at {mr['measured']['failed_at_per_s']} req/s")
        for key in ("error_pre_registered", "error_same_model", "error_refit", "error_trace_launch"):
            if f"max_abs_{key}" in entry:
                print(f"max |{key}| below saturation: " + ", ".join(
                    f"{m} {v:.1%}" for m, v in entry[f"max_abs_{key}"].items() if v is not None and not math.isnan(v)))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
