"""How long `loadgen plan` takes to search: configurations per second, wall and CPU time, on this machine.

    python benchmarks/plan_speed.py                  # writes results/cpu-plan-speed.json

Cases: the default search space for a 7B model on every catalog GPU (6 GPUs x TP 1,2,4,8 x 4 max_num_seqs x 4 max
batched tokens x every replica count within 8 GPUs: 1,440 configurations), scored fully loaded and for a target
rate, and a space of more than 1,000 *distinct engines* (no replica counts), since replicas are scored analytically
and cost no replay. CPU time counts the worker processes. The goal (issue 23): 1,000 configurations in under 2
minutes on the 2-core machine; the machine is shared, so wall time depends on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen.plan.planner import PlanRequest, run_plan  # noqa: E402
from loadgen.plan.search import PointSize, Slo  # noqa: E402
from loadgen.plan.space import SearchSpace  # noqa: E402
from loadgen.plan.workload import from_distributions  # noqa: E402
from scenarios.catalog import get_model, list_gpus  # noqa: E402

SLO = {"ttft": 100.0, "tpot": 10.0}


def cases() -> list[tuple[str, SearchSpace, float | None]]:
    gpus = tuple(list_gpus())
    default = SearchSpace(gpus, (1, 2, 4, 8), (64, 128, 256, 512), (2048, 4096, 8192, 16384), 8)
    engines = SearchSpace(gpus, (1, 2, 4, 8), (32, 64, 96, 128, 192, 256, 384, 512),
                          (1024, 2048, 4096, 6144, 8192, 12288, 16384), 8, replicas=(1,))
    return [("default space, fully loaded", default, None), ("default space, target 40 req/s", default, 40.0),
            ("distinct engines only (replicas 1)", engines, None)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=str(ROOT / "results" / "cpu-plan-speed.json"))
    args = ap.parse_args()
    model = get_model("7b")
    workload = from_distributions("512", "128", 4000, 0, model.max_context)
    rows, out = [], []
    for name, space, target in cases():
        t0 = time.perf_counter()
        result = run_plan(PlanRequest(model, space, workload, Slo(SLO), PointSize(), 0, target), jobs=args.jobs,
                          progress=False)
        wall = time.perf_counter() - t0
        n = len(result.configs)
        entry = {"case": name, "configurations": n, "feasible": len(result.feasible),
                 "engines_simulated": result.engines_simulated, "replays": result.replays,
                 "requests_simulated": result.requests_simulated, "wall_s": wall, "cpu_s": result.cpu_s,
                 "configurations_per_s": n / wall, "wall_s_per_1000_configurations": 1000 * wall / n}
        out.append(entry)
        rows.append([name, n, result.engines_simulated, result.replays, f"{result.requests_simulated:,}",
                     f"{wall:.1f}", f"{result.cpu_s:.1f}", f"{1000 * wall / n:.1f}"])
        Path(args.out).write_text(json.dumps({
            "benchmark": "plan_speed", "command": f"python benchmarks/plan_speed.py --jobs {args.jobs}",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "shared": "yes: other sessions' work ran at the same time"},
            "jobs": args.jobs, "model": model.name, "workload": workload.description, "slo_ms_p90": SLO,
            "point_size": "max(200, 30 s of arrivals) requests, at most 4000", "cases": out}, indent=1) + "\n")
    from tabulate import tabulate

    print(tabulate(rows, headers=["case", "configurations", "engines simulated", "replays", "simulated requests",
                                  "wall s", "CPU s (all processes)", "wall s per 1,000 configurations"],
                   disable_numparse=True))
    print(f"jobs {args.jobs} on {os.cpu_count()} CPUs (shared machine); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
