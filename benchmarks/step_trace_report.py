"""What vLLM's engine core spends per step, from a step trace (benchmarks/vllm_serving.py --step-trace): the CPU
time to schedule and launch each kind of step, how long it waited for the GPU, how long it took to process the
output, and, where the CPU waited (so the output's arrival marks the GPU's end), the GPU's time for the step.
These are the quantities the simulated engine's step pipeline is built from (backends/roofline.py).

    python benchmarks/step_trace_report.py OUT/steps.*.jsonl [--graph-max-tokens 512] [--window T0 T1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BUCKETS = ((1, 1), (2, 4), (5, 8), (9, 16), (17, 32), (33, 10**9))


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


def summarize_steps(steps: list[dict], graph_max_tokens: int = 512) -> list[dict]:
    steps = [s for s in steps if all(k in s for k in ("schedule", "execute", "sample", "wait", "update"))]
    steps.sort(key=lambda s: s["schedule"][0])
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
    p.add_argument("--json")
    args = p.parse_args()
    steps = [json.loads(line) for path in args.traces for line in Path(path).read_text().splitlines() if line.strip()]
    if args.window:
        steps = [s for s in steps if args.window[0] <= s["schedule"][0] <= args.window[1]]
    if not steps:
        print("no steps in the trace files; was the server started with --step-trace?", file=sys.stderr)
        return 2
    rows = summarize_steps(steps, args.graph_max_tokens)
    from tabulate import tabulate

    print(tabulate([[r[k] for k in ("kind", "requests", "steps", "tokens", "schedule_ms", "launch_ms", "wait_ms",
                                     "output_ms", "gpu_ms", "gpu_readable_steps")] for r in rows],
                   headers=["step", "requests", "steps", "tokens p50", "schedule", "schedule+launch", "wait for GPU",
                            "output", "GPU (ms)", "GPU readable"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"graph_max_tokens": args.graph_max_tokens, "steps": len(steps),
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
