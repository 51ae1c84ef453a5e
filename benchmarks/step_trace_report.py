"""What vLLM's engine core spends per step, from a step trace (benchmarks/vllm_serving.py --step-trace): the CPU
time to schedule and launch each kind of step, how long it waited for the GPU, how long it took to process the
output, and, where the CPU waited (so the output's arrival marks the GPU's end), the GPU's time for the step.
These are the quantities the simulated engine's step pipeline is built from (backends/sim/roofline.py): its launch
constants are the least-squares fits of mean launch time against sequences per step printed last.

    python benchmarks/step_trace_report.py OUT/steps.*.jsonl [--graph-max-tokens 512] [--window T0 T1]
        [--runs vllm-serving.json ...] [--loadgen-runs RUN_DIR ...] [--json FILE] [--csv FILE.csv.gz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from pathlib import Path

BUCKETS = ((1, 1), (2, 4), (5, 8), (9, 16), (17, 32), (33, 10**9))
# Launches slower than this are compilations and graph captures during warm-up, not steady serving.
WARMUP_LAUNCH_S = 0.1
CSV_FIELDS = ("schedule_start_s", "schedule_end_s", "execute_start_s", "launch_end_s", "wait_start_s", "wait_end_s",
              "update_end_s", "requests", "tokens", "new_requests", "new_tokens", "multi_token_requests")


def kind_of(step: dict, graph_max_tokens: int) -> str:
    if step["tokens"] > graph_max_tokens:
        return "off the graph"
    return "with a prefill" if step["multi_token_requests"] else "decode only"


def gpu_times(steps: list[dict], min_wait_s: float = 2e-4) -> list[float | None]:
    """Per step, the GPU's time where it can be read: the CPU waited for this step's output (so the output's
    arrival is the GPU's end) and for the previous one's (so the GPU started this step when it finished that one,
    or when this step's launch began, whichever was later)."""
    out: list[float | None] = [None]
    for prev, cur in zip(steps, steps[1:]):
        waited = cur["wait"][1] - cur["wait"][0] > min_wait_s and prev["wait"][1] - prev["wait"][0] > min_wait_s
        start = max(prev["wait"][1], cur["execute"][0])
        out.append(cur["wait"][1] - start if waited else None)
    return out


def complete_steps(steps: list[dict]) -> list[dict]:
    """The steps whose every phase was recorded (not the one in flight when the server stopped), in order."""
    steps = [s for s in steps if all(k in s for k in ("schedule", "execute", "sample", "wait", "update"))]
    return sorted(steps, key=lambda s: s["schedule"][0])


def launch_fits(steps: list[dict], graph_max_tokens: int = 512) -> dict[str, dict]:
    """Per step kind: mean launch (scheduling start to the end of sample_tokens) = intercept + slope x sequences,
    least squares over the steps outside warm-up, and the mean time to process a step's output. Means, because a
    simulated step charges one fixed time and what queues behind a step is its mean."""
    import numpy as np

    fits = {}
    for kind in ("decode only", "with a prefill", "off the graph"):
        sel = [s for s in complete_steps(steps) if kind_of(s, graph_max_tokens) == kind
               and s["sample"][1] - s["schedule"][0] < WARMUP_LAUNCH_S]
        if not sel:
            continue
        n = np.array([s["requests"] for s in sel], dtype=float)
        launch = np.array([s["sample"][1] - s["schedule"][0] for s in sel]) * 1e3
        slope, intercept = np.polyfit(n, launch, 1) if len(set(n)) > 1 else (0.0, float(launch.mean()))
        fits[kind] = {"steps": len(sel), "mean_launch_ms": round(float(launch.mean()), 3),
                      "launch_intercept_ms": round(float(intercept), 3), "launch_per_sequence_ms": round(float(slope), 4),
                      "mean_output_ms": round(statistics.mean(s["update"][1] - s["update"][0] for s in sel) * 1e3, 3)}
    return fits


def front_end_spread(steps: list[dict], run_dir: Path) -> dict:
    """How the API server hands on one engine step's tokens, from a loadgen run against the traced server (both on
    CLOCK_MONOTONIC): each token belongs to the last step whose output was processed before it arrived; per step,
    the first token's delay after that and the spread of its tokens' arrivals, fitted against their number."""
    import numpy as np

    done = np.array(sorted(s["update"][1] for s in complete_steps(steps)))
    origin = json.loads((run_dir / "run.json").read_text())["origin_perf_counter_ns"] / 1e9
    arrivals = []
    for line in (run_dir / "requests.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("phase") == "measured" and r.get("status") == "ok":
            arrivals += [origin + r["sent_s"] + t / 1e3 for t in r["token_times_ms"]]
    arrivals = np.sort(np.array(arrivals))
    step_of = np.searchsorted(done, arrivals) - 1
    lags: dict[int, list[float]] = {}
    for k, t in zip(step_of, arrivals):
        if k >= 0:
            lags.setdefault(int(k), []).append((t - done[k]) * 1e3)
    per_step = [(len(v), min(v), max(v) - min(v)) for v in lags.values() if len(v) >= 2]
    if not per_step:
        return {}
    tokens = np.array([x[0] for x in per_step], dtype=float)
    slope, intercept = np.polyfit(tokens, np.array([x[2] for x in per_step]), 1)
    return {"steps": len(per_step), "tokens_per_step_p50": float(np.median(tokens)),
            "first_token_after_output_p50_ms": round(float(np.median([x[1] for x in per_step])), 3),
            "spread_ms_per_token": round(float(slope), 4), "spread_intercept_ms": round(float(intercept), 3)}


def write_csv(steps: list[dict], path: Path) -> None:
    """Every complete step, compactly (times to 10 us on CLOCK_MONOTONIC)."""
    with gzip.open(path, "wt") as out:
        out.write(",".join(CSV_FIELDS) + "\n")
        for s in complete_steps(steps):
            times = (s["schedule"][0], s["schedule"][1], s["execute"][0], s["sample"][1], s["wait"][0], s["wait"][1],
                     s["update"][1])
            counts = (s["requests"], s["tokens"], s["new_requests"], s["new_tokens"], s["multi_token_requests"])
            out.write(",".join([f"{t:.5f}" for t in times] + [str(c) for c in counts]) + "\n")


def summarize_steps(steps: list[dict], graph_max_tokens: int = 512) -> list[dict]:
    steps = complete_steps(steps)
    gpu = gpu_times(steps)
    groups: dict[tuple[str, tuple[int, int]], list[int]] = {}
    for i, s in enumerate(steps):
        bucket = next(b for b in BUCKETS if b[0] <= s["requests"] <= b[1])
        groups.setdefault((kind_of(s, graph_max_tokens), bucket), []).append(i)
    rows = []
    for (kind, bucket), idx in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        def med(values):
            values = [v for v in values if v is not None]
            return round(statistics.median(values) * 1e3, 3) if values else None

        sel = [steps[i] for i in idx]
        rows.append({
            "kind": kind, "requests": f"{bucket[0]}" if bucket[0] == bucket[1] else f"{bucket[0]}-{bucket[1] if bucket[1] < 10**9 else ''}",
            "steps": len(sel),
            "schedule_ms": med([s["schedule"][1] - s["schedule"][0] for s in sel]),
            "launch_ms": med([s["sample"][1] - s["schedule"][0] for s in sel]),
            "wait_ms": med([s["wait"][1] - s["wait"][0] for s in sel]),
            "output_ms": med([s["update"][1] - s["update"][0] for s in sel]),
            "gpu_ms": med([gpu[i] for i in idx]),
            "gpu_readable_steps": sum(1 for i in idx if gpu[i] is not None),
            "tokens": statistics.median(s["tokens"] for s in sel),
        })
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("traces", nargs="+")
    p.add_argument("--graph-max-tokens", type=int, default=512)
    p.add_argument("--window", nargs=2, type=float, metavar=("T0", "T1"),
                   help="only steps scheduled in this window of CLOCK_MONOTONIC seconds (a client run's "
                        "clock_window_s in vllm_serving.py's JSON)")
    p.add_argument("--runs", nargs="+", default=[],
                   help="vllm_serving.py result files: also a table for each client run's window")
    p.add_argument("--loadgen-runs", nargs="+", default=[],
                   help="loadgen run directories against the traced server: how the front end hands on a step's tokens")
    p.add_argument("--json")
    p.add_argument("--csv", help="also write every complete step to this gzipped CSV")
    args = p.parse_args()
    steps = [json.loads(line) for path in args.traces for line in Path(path).read_text().splitlines() if line.strip()]
    if args.window:
        steps = [s for s in steps if args.window[0] <= s["schedule"][0] <= args.window[1]]
    if not steps:
        print("no steps in the trace files; was the server started with --step-trace?", file=sys.stderr)
        return 2
    rows = summarize_steps(steps, args.graph_max_tokens)
    fits = launch_fits(steps, args.graph_max_tokens)
    from tabulate import tabulate

    print(tabulate([[r[k] for k in ("kind", "requests", "steps", "tokens", "schedule_ms", "launch_ms", "wait_ms",
                                     "output_ms", "gpu_ms", "gpu_readable_steps")] for r in rows],
                   headers=["step", "requests", "steps", "tokens p50", "schedule", "schedule+launch", "wait for GPU",
                            "output", "GPU (ms)", "GPU readable"]))
    print("medians in ms. Mean launch = intercept + slope x sequences (least squares, warm-up left out):")
    for kind, f in fits.items():
        print(f"  {kind}: {f['launch_intercept_ms']:.2f} + {f['launch_per_sequence_ms']:.4f} x sequences "
              f"(mean {f['mean_launch_ms']:.2f} ms over {f['steps']} steps); output {f['mean_output_ms']:.3f} ms")
    per_run = []
    for path in args.runs:
        for point in json.loads(Path(path).read_text())["points"]:
            for client in ("vllm_bench", "loadgen"):
                window = (point.get(client) or {}).get("clock_window_s")
                if window:
                    per_run.append({"point": f"{point['kind']}:{point['value']:g}", "client": client, "window_s": window,
                                    "rows": summarize_steps([s for s in steps if window[0] <= s["schedule"][0] <= window[1]],
                                                            args.graph_max_tokens)})
    front = {}
    for run_dir in args.loadgen_runs:
        front[run_dir] = f = front_end_spread(steps, Path(run_dir))
        if f:
            print(f"  front end, {run_dir}: first token {f['first_token_after_output_p50_ms']:.2f} ms after the step's "
                  f"output (median), spread {f['spread_ms_per_token']:.3f} ms per token ({f['steps']} steps)")
    if args.json:
        report = {"graph_max_tokens": args.graph_max_tokens, "steps": len(complete_steps(steps)), "rows": rows,
                  "launch_fits": fits}
        if per_run:
            report.update(runs=args.runs, per_client_run=per_run)
        if front:
            report["front_end"] = front
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.csv:
        write_csv(steps, Path(args.csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
