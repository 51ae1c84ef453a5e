"""The simulated engine against vLLM measured on the H100: fit two documented constants on one load point,
predict every other point, print the errors, write JSON.

    python benchmarks/sim_validation.py --fit closed:8 --out results/h100-sim-validation.json

Measured values are loadgen's medians from results/h100-vllm-serving-*.json (points measured twice are averaged:
run-to-run variation of the real server is itself ~10% on TTFT at 60 requests). Predictions come from the sim
replayed in virtual time (backends/sim_replay.py: the live sim's scheduler and step costs) with 2,000 requests.
Saturated points (offered load above capacity) are shown but not scored.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.sim import build_config  # noqa: E402
from backends.sim_replay import replay, summarize_replay  # noqa: E402

MEASURED = ["results/h100-vllm-serving-poisson.json", "results/h100-vllm-serving-closed.json",
            "results/h100-vllm-serving-ttft-check.json", "results/h100-vllm-serving-phases.json",
            "results/h100-vllm-serving-low-load.json"]
SATURATED = {("poisson", 32.0), ("closed", 128.0)}  # vLLM's unthrottled capacity is ~30 req/s here


def measured_points(paths: list[str]) -> dict[tuple[str, float], dict]:
    runs: dict[tuple[str, float], list[dict]] = {}
    for path in paths:
        for p in json.loads((ROOT / path).read_text())["points"]:
            s = (p.get("loadgen") or {}).get("summary")
            if s:
                runs.setdefault((p["kind"], float(p["value"])), []).append(s)
    out = {}
    for key, summaries in runs.items():
        out[key] = {
            "runs": len(summaries),
            "ttft_p50_ms": statistics.mean(s["ttft_ms"]["p50"] for s in summaries),
            "tpot_p50_ms": statistics.mean(s["tpot_ms"]["p50"] for s in summaries),
            "output_tok_s": statistics.mean(s["throughput"]["output_tokens_per_s"] for s in summaries),
        }
    return out


def predict(config, kind: str, value: float, n: int = 2000) -> dict:
    if kind == "poisson":
        return summarize_replay(replay(config, 512, 128, n, qps=value, seed=7))
    return summarize_replay(replay(config, 512, 128, max(n // 2, int(value) * 8), concurrency=int(value)))


def errors(pred: dict, meas: dict, kind: str) -> dict:
    out = {m: pred[m] / meas[m] - 1 for m in ("ttft_p50_ms", "tpot_p50_ms")}
    if kind == "closed":  # under Poisson arrivals below saturation, throughput is the offered load
        out["output_tok_s"] = pred["output_tok_s"] / meas["output_tok_s"] - 1
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fit", default="closed:8", help="the one point the constants are fitted on (default closed:8)")
    p.add_argument("--profile", help="drive the sim with a measured profile (training_bench micro profile) instead "
                                      "of the roofline")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    measured = measured_points(MEASURED)
    kind, _, value = args.fit.partition(":")
    fit_key = (kind, float(value))
    target = measured[fit_key]
    base = build_config("7b", "h100", 1, profile=args.profile)
    # fit from zero, so the fitted values do not depend on the defaults they became
    base = replace(base, cost=replace(base.cost, step_overhead_s=0.3e-3, request_overhead_s=0.0))

    def config_with(overhead_ms: float, request_ms: float):
        return replace(base, cost=replace(base.cost, step_overhead_s=overhead_ms / 1e3,
                                          request_overhead_s=request_ms / 1e3))

    # Two constants, fitted on one point by grid search (squared relative error of the TTFT and TPOT medians): the
    # engine's fixed cost per iteration (TPOT) and its fixed latency per request before scheduling (TTFT). The
    # roofline's efficiencies stay at their datasheet-derived defaults.
    best = None
    for overhead_ms, request_ms in itertools.product([x / 10 for x in range(0, 31)], [float(x) for x in range(0, 31)]):
        pred = predict(config_with(overhead_ms, request_ms), *fit_key, n=400)
        e = errors(pred, target, kind)
        loss = e["ttft_p50_ms"] ** 2 + e["tpot_p50_ms"] ** 2
        if best is None or loss < best[0]:
            best = (loss, overhead_ms, request_ms)
    _, overhead_ms, request_ms = best
    fitted = config_with(overhead_ms, request_ms)
    rows, report = [], {"cost_model": base.cost_model, "fit_point": args.fit, "fitted": {"step_overhead_ms": overhead_ms, "request_overhead_ms": request_ms},
                        "before_fit": {"step_overhead_ms": base.cost.step_overhead_s * 1e3,
                                       "request_overhead_ms": base.cost.request_overhead_s * 1e3}, "points": []}
    for key in sorted(measured, key=lambda k: (k[0] != "poisson", k[1])):
        meas = measured[key]
        pred = predict(fitted, *key)
        default = predict(base, *key)
        e = errors(pred, meas, key[0])
        scored = key not in SATURATED and key != fit_key
        report["points"].append({"kind": key[0], "value": key[1], "measured": meas, "predicted": pred,
                                 "predicted_before_fit": default, "error": e, "scored": scored,
                                 "role": "fit" if key == fit_key else ("saturated" if key in SATURATED else "predicted")})
        rows.append([f"{key[0]} {key[1]:g}", meas["runs"], f"{meas['ttft_p50_ms']:.1f}", f"{pred['ttft_p50_ms']:.1f}",
                     f"{e['ttft_p50_ms']:+.0%}", f"{meas['tpot_p50_ms']:.2f}", f"{pred['tpot_p50_ms']:.2f}",
                     f"{e['tpot_p50_ms']:+.0%}", f"{meas['output_tok_s']:.0f}", f"{pred['output_tok_s']:.0f}",
                     f"{e['output_tok_s']:+.0%}" if "output_tok_s" in e else "(offered)",
                     "fit" if key == fit_key else ("saturated" if key in SATURATED else "")])
    scored = [pt for pt in report["points"] if pt["scored"]]
    report["median_abs_error"] = {m: statistics.median(abs(pt["error"][m]) for pt in scored if m in pt["error"])
                                  for m in ("ttft_p50_ms", "tpot_p50_ms", "output_tok_s")}
    report["max_abs_error"] = {m: max(abs(pt["error"][m]) for pt in scored if m in pt["error"])
                               for m in ("ttft_p50_ms", "tpot_p50_ms", "output_tok_s")}
    from tabulate import tabulate

    print(f"fitted on {args.fit}: step overhead {overhead_ms:.1f} ms, request overhead {request_ms:.0f} ms "
          f"(before the fit {base.cost.step_overhead_s * 1e3:.1f} ms, {base.cost.request_overhead_s * 1e3:.0f} ms)")
    print(tabulate(rows, headers=["point", "runs", "TTFT meas", "TTFT sim", "err", "TPOT meas", "TPOT sim", "err",
                                  "tok/s meas", "tok/s sim", "err", ""], disable_numparse=True))
    print("median |error| over predicted points below saturation: " +
          ", ".join(f"{k} {v:.1%}" for k, v in report["median_abs_error"].items()))
    print("max |error|: " + ", ".join(f"{k} {v:.1%}" for k, v in report["max_abs_error"].items()))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
