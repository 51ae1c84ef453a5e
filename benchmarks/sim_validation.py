"""The simulated engine against vLLM measured on the H100: fit documented constants on one load point, predict
every other point, print the errors, write JSON.

    python benchmarks/sim_validation.py --out results/h100-sim-validation-fixed-pinned.json
    python benchmarks/sim_validation.py --no-fit --measured results/h100-vllm-serving-paired-a.json results/h100-vllm-serving-paired-b.json
    python benchmarks/sim_validation.py --fit poisson:8 --fit-frontend --lag 1 --out results/h100-sim-validation-frontend.json

Measured values are loadgen's medians from the vllm_serving.py result files (points measured more than once are
averaged). Predictions come from the sim replayed in virtual time (backends/sim/replay.py: the live sim's
scheduler, step pipeline and costs): a Poisson point replays each measured run's own send times (a median over a
few dozen requests depends on which of them met a busy engine), a closed loop as many requests as the measured run
with every user starting at once (a closed loop's TTFT is set by its waves of simultaneous prefills, which last as
long as the run). Saturated points are shown but not scored. The default fit is the sim's default model: two
constants (the GPU's fixed time per step and the per-request latency) fitted on one point; the CPU launch costs,
the CUDA-graph cliff and the KV-read efficiency are measured elsewhere, not fitted. `--lag 1 --fit-frontend` fits
the alternative model, with a scheduling lag and a fitted front-end cost per streamed token (not the default: it
fits worse, results/README.md).
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

from backends.sim.config import build_config  # noqa: E402
from backends.sim.replay import replay, summarize_replay  # noqa: E402

# The default fit's runs: loadgen sending no min_tokens to vLLM (its min-tokens logits processor slows vLLM's
# engine), two fresh servers, the second with server and clients on separate cores. Every loadgen run keeps its
# own send times for the replay. Other measured files (results/README.md lists them): pass them with --measured.
MEASURED = ["results/h100-vllm-serving-fixed-a.json", "results/h100-vllm-serving-fixed-b.json",
            "results/h100-vllm-serving-pinned-a.json", "results/h100-vllm-serving-pinned-b.json"]
SATURATED = {("poisson", 32.0), ("closed", 128.0)}  # vLLM's unthrottled capacity is ~30 req/s here


def measured_points(paths: list[str]) -> dict[tuple[str, float], dict]:
    runs: dict[tuple[str, float], list[dict]] = {}
    for path in paths:
        for p in json.loads((ROOT / path).read_text())["points"]:
            lg = p.get("loadgen") or {}
            if lg.get("summary"):
                runs.setdefault((p["kind"], float(p["value"])), []).append(lg)
    out = {}
    for key, lgs in runs.items():
        summaries = [lg["summary"] for lg in lgs]
        out[key] = {
            "runs": len(summaries),
            "requests": round(statistics.mean(s["requests"]["completed"] for s in summaries)),
            "ttft_p50_ms": statistics.mean(s["ttft_ms"]["p50"] for s in summaries),
            "tpot_p50_ms": statistics.mean(s["tpot_ms"]["p50"] for s in summaries),
            "output_tok_s": statistics.mean(s["throughput"]["output_tokens_per_s"] for s in summaries),
            # each run's own send times, where the benchmark kept them (open loops): the sim replays exactly
            # these, so a median over a few dozen requests is compared with the sim's over the same arrivals
            "schedules": [[row[0] for row in lg["requests"]] for lg in lgs if lg.get("requests")]
            if key[0] == "poisson" else [],
        }
    return out


def predict(config, kind: str, value: float, n: int = 2000, schedules: list[list[float]] | None = None,
            requests: int | None = None) -> dict:
    if kind == "poisson" and schedules:
        per_run = [summarize_replay(replay(config, 512, 128, 0, send_times=times)) for times in schedules]
        return {m: statistics.mean(r[m] for r in per_run) for m in per_run[0]}
    if kind == "poisson":
        return summarize_replay(replay(config, 512, 128, n, qps=value, seed=7))
    return summarize_replay(replay(config, 512, 128, requests or max(n // 2, int(value) * 8), concurrency=int(value)))


def errors(pred: dict, meas: dict, kind: str) -> dict:
    out = {m: pred[m] / meas[m] - 1 for m in ("ttft_p50_ms", "tpot_p50_ms")}
    if kind == "closed":  # under Poisson arrivals below saturation, throughput is the offered load
        out["output_tok_s"] = pred["output_tok_s"] / meas["output_tok_s"] - 1
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fit", default="closed:1", help="the one point the constants are fitted on (default closed:1: one "
                                                      "request at a time, so TPOT is the decode step and TTFT the "
                                                      "per-request latency plus a lone prefill)")
    p.add_argument("--profile", help="drive the sim with a measured profile (training_bench micro profile) instead "
                                      "of the roofline")
    p.add_argument("--lag", type=int, default=None,
                   help="scheduling_lag_steps (structural, not fitted; default: the sim's own default)")
    p.add_argument("--fit-frontend", action="store_true", help="also fit the front end's time per streamed token")
    p.add_argument("--no-fit", action="store_true",
                   help="fit nothing: predict every point with the sim's default constants (an out-of-sample check)")
    p.add_argument("--graph-max-tokens", type=int, default=None,
                   help="the engine's largest CUDA graph in tokens (cuda_graph_max_tokens; vLLM's default 512), for "
                        "runs made with a larger max_cudagraph_capture_size")
    p.add_argument("--measured", nargs="+", default=MEASURED, help="vllm_serving.py result files to compare with")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    measured = measured_points(args.measured)
    kind, _, value = args.fit.partition(":")
    fit_key = None if args.no_fit else (kind, float(value))
    target = measured[fit_key] if fit_key else None
    base = build_config("7b", "h100", 1, profile=args.profile)
    if args.graph_max_tokens is not None:
        base = replace(base, cost=replace(base.cost, cuda_graph_max_tokens=args.graph_max_tokens))
    defaults = base.cost
    if args.lag is None:
        args.lag = base.cost.scheduling_lag_steps
    # fit from zero, so the fitted values do not depend on the defaults they became
    # (the front end's cost per token is measured, not fitted, unless --fit-frontend)
    front_ms = 0.0 if args.fit_frontend else defaults.frontend_token_s * 1e3
    base = replace(base, cost=replace(base.cost, step_overhead_s=0.3e-3, request_overhead_s=0.0,
                                      frontend_token_s=front_ms / 1e3, scheduling_lag_steps=args.lag))

    def config_with(overhead_ms: float, request_ms: float, frontend_ms: float = front_ms):
        return replace(base, cost=replace(base.cost, step_overhead_s=overhead_ms / 1e3, request_overhead_s=request_ms / 1e3,
                                          frontend_token_s=frontend_ms / 1e3))

    # Constants fitted on one point by grid search (squared relative error of the TTFT and TPOT medians): the
    # engine's fixed cost per iteration (TPOT), its fixed latency per request before scheduling (TTFT) and, with
    # --fit-frontend, the front end's time per streamed token (how TTFT grows with load). A coarse grid, then a
    # fine one around its best. The roofline's efficiencies stay at their datasheet-derived defaults.
    def search(steps, requests, frontends):
        best = None
        for overhead_ms, request_ms, frontend_ms in itertools.product(steps, requests, frontends):
            pred = predict(config_with(overhead_ms, request_ms, frontend_ms), *fit_key, n=300,
                           schedules=target["schedules"], requests=target["requests"])
            e = errors(pred, target, kind)
            loss = e["ttft_p50_ms"] ** 2 + e["tpot_p50_ms"] ** 2
            if best is None or loss < best[0]:
                best = (loss, overhead_ms, request_ms, frontend_ms)
        return best

    if fit_key is None:
        overhead_ms, request_ms = defaults.step_overhead_s * 1e3, defaults.request_overhead_s * 1e3
        frontend_ms = defaults.frontend_token_s * 1e3
    else:
        frontends = [x / 20 for x in range(0, 11)] if args.fit_frontend else [front_ms]
        _, o, r, f = search([x / 5 for x in range(0, 16)], [float(x) for x in range(0, 31, 2)], frontends)
        _, overhead_ms, request_ms, frontend_ms = search(
            [max(0.0, round(o + d / 10, 2)) for d in (-1, 0, 1)], [max(0.0, r + d) for d in (-1, 0, 1)],
            sorted({max(0.0, round(f + d / 40, 3)) for d in (-1, 0, 1)}) if args.fit_frontend else [front_ms])
    fitted = config_with(overhead_ms, request_ms, frontend_ms)
    rows, report = [], {"cost_model": base.cost_model, "fit_point": None if fit_key is None else args.fit,
                        "cuda_graph_max_tokens": base.cost.cuda_graph_max_tokens, "fitted": {"step_overhead_ms": overhead_ms, "request_overhead_ms": request_ms,
                                                                                        "frontend_token_ms": frontend_ms, "scheduling_lag_steps": args.lag},
                        "before_fit": {"step_overhead_ms": base.cost.step_overhead_s * 1e3,
                                       "request_overhead_ms": base.cost.request_overhead_s * 1e3}, "points": []}
    for key in sorted(measured, key=lambda k: (k[0] != "poisson", k[1])):
        meas = measured[key]
        pred = predict(fitted, *key, schedules=meas["schedules"], requests=meas["requests"])
        default = predict(base, *key, schedules=meas["schedules"], requests=meas["requests"])
        e = errors(pred, meas, key[0])
        role = "fit" if key == fit_key else ("saturated" if key in SATURATED else "predicted")
        report["points"].append({"kind": key[0], "value": key[1],
                                 "measured": {k: v for k, v in meas.items() if k != "schedules"},
                                 "replayed_measured_schedules": len(meas["schedules"]), "predicted": pred,
                                 "predicted_before_fit": default, "error": e, "scored": role == "predicted",
                                 "role": role})
        rows.append([f"{key[0]} {key[1]:g}", meas["runs"], f"{meas['ttft_p50_ms']:.1f}", f"{pred['ttft_p50_ms']:.1f}",
                     f"{e['ttft_p50_ms']:+.0%}", f"{meas['tpot_p50_ms']:.2f}", f"{pred['tpot_p50_ms']:.2f}",
                     f"{e['tpot_p50_ms']:+.0%}", f"{meas['output_tok_s']:.0f}", f"{pred['output_tok_s']:.0f}",
                     f"{e['output_tok_s']:+.0%}" if "output_tok_s" in e else "(offered)",
                     "" if role == "predicted" else role])
    scored = [pt for pt in report["points"] if pt["scored"]]
    report["median_abs_error"] = {m: statistics.median(abs(pt["error"][m]) for pt in scored if m in pt["error"])
                                  for m in ("ttft_p50_ms", "tpot_p50_ms", "output_tok_s")}
    report["max_abs_error"] = {m: max(abs(pt["error"][m]) for pt in scored if m in pt["error"])
                               for m in ("ttft_p50_ms", "tpot_p50_ms", "output_tok_s")}
    from tabulate import tabulate

    print(f"{'fitted on ' + args.fit if fit_key else 'no fit, the defaults'}: step overhead {overhead_ms:.1f} ms, request overhead {request_ms:.0f} ms, front end "
          f"{frontend_ms:.3f} ms per token, scheduling lag {args.lag} step(s) "
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
