"""How fast the simulated engine's virtual-time replay predicts a load point, on this machine: requests simulated per
second of wall time and simulated seconds per wall second, for the span replay (`backends.sim.replay.replay`) and
its step-by-step reference (`replay_stepwise`, on fewer requests: it takes about 2 ms a request). Each point also
checks that both give the same requests, to the last bit, on the reference's request count.

    python benchmarks/sim_speed.py --out results/cpu-sim-speed.json

Both replays are single-threaded Python: one core. Wall time is the best of --repeats runs (the least disturbed
by whatever else the machine runs), CPU time that run's process time; the machine's load average is recorded.
The figures are speeds of this machine, so they are measured here and never asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.sim.config import build_config  # noqa: E402
from backends.sim.replay import replay, replay_stepwise  # noqa: E402

POINTS = {"poisson:4": {"qps": 4.0}, "poisson:16": {"qps": 16.0}, "poisson:32": {"qps": 32.0},
          "closed:64": {"concurrency": 64}}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _time(fn, repeats: int) -> tuple[float, float, list]:
    """(best wall seconds, CPU seconds of that run, its result)."""
    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best[0]:
            best = (wall, cpu, out)
    return best


def measure(name: str, arrivals: dict, impl: str, requests: int, repeats: int, args) -> dict:
    cfg = build_config(args.model, args.gpu, 1)
    fn = replay if impl == "replay" else replay_stepwise
    wall, cpu, done = _time(lambda: fn(cfg, args.input_len, args.output_len, requests, seed=args.seed, **arrivals),
                            repeats)
    simulated = max(r.arrival_s + r.e2el_s for r in done)  # the engine's clock from the first send's origin
    return {"point": name, "implementation": impl, "requests": len(done), "wall_s": wall, "cpu_s": cpu,
            "repeats": repeats, "simulated_s": simulated, "requests_per_wall_s": len(done) / wall,
            "simulated_per_wall_s": simulated / wall, "ms_per_request": wall / len(done) * 1e3}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="7b")
    p.add_argument("--gpu", default="h100")
    p.add_argument("--input-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--requests", type=int, default=10_000, help="requests per point for the span replay")
    p.add_argument("--stepwise-requests", type=int, default=1_000,
                   help="requests per point for the step-by-step reference (and the identity check)")
    p.add_argument("--repeats", type=int, default=3, help="runs of the span replay per point (best wall time kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--points", default=",".join(POINTS), help=f"comma-separated subset of {', '.join(POINTS)}")
    p.add_argument("--out", type=Path, default=None, help="JSON to write (e.g. results/cpu-sim-speed.json)")
    args = p.parse_args()
    names = [n.strip() for n in args.points.split(",") if n.strip()]
    unknown = [n for n in names if n not in POINTS]
    if unknown:
        print(f"sim_speed: error: unknown point(s) {', '.join(unknown)}; choose from {', '.join(POINTS)}",
              file=sys.stderr)
        return 2
    from tabulate import tabulate

    load = os.getloadavg()
    rows, results = [], []
    for name in names:
        cfg = build_config(args.model, args.gpu, 1)
        kw = dict(seed=args.seed, **POINTS[name])
        identical = (replay(cfg, args.input_len, args.output_len, args.stepwise_requests, **kw)
                     == replay_stepwise(cfg, args.input_len, args.output_len, args.stepwise_requests, **kw))
        for impl, n, repeats in (("replay", args.requests, args.repeats), ("stepwise", args.stepwise_requests, 1)):
            r = measure(name, POINTS[name], impl, n, repeats, args)
            r["identical_to_stepwise"] = identical
            results.append(r)
            rows.append([name, impl, f"{r['requests']:,}", f"{r['wall_s']:.3f}", f"{r['cpu_s']:.3f}",
                         f"{r['ms_per_request']:.3f}", f"{r['requests_per_wall_s']:,.0f}",
                         f"{r['simulated_s']:,.1f}", f"{r['simulated_per_wall_s']:,.0f}x",
                         "yes" if identical else "NO"])
            print(f"  {name} {impl}: {r['wall_s']:.3f} s", file=sys.stderr, flush=True)
    print(f"SIMULATED {args.model} on 1x {args.gpu}, {args.input_len} in / {args.output_len} out; wall time on "
          f"{_cpu_model()} ({os.cpu_count()} cores, load average {load[0]:.2f} at start), one core")
    print(tabulate(rows, headers=["point", "replay", "requests", "wall s", "CPU s", "ms/request", "requests/s",
                                  "simulated s", "simulated/wall", "same as stepwise"], disable_numparse=True))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"benchmark": "sim_speed", "simulated": True,
                  "command": "python benchmarks/sim_speed.py " + " ".join(sys.argv[1:]),
                  "what": "wall and CPU time of the virtual-time replay of one load point (single-threaded), "
                          "best of `repeats`; simulated_s is the last finish on the engine's clock; "
                          "identical_to_stepwise compares every request of both replays at the stepwise count",
                  "workload": {"model": args.model, "gpu": args.gpu, "input_len": args.input_len,
                               "output_len": args.output_len, "seed": args.seed},
                  "host": {"cpu": _cpu_model(), "cpus": os.cpu_count(), "machine": platform.machine(),
                           "python": platform.python_version(), "numpy": np.__version__,
                           "load_average_at_start": list(load)},
                  "points": results}
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
