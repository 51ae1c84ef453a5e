"""The client's own timing error against the simulated engine's ground truth, and trace replay's send lateness.

    python benchmarks/client_accuracy.py --output results/cpu-client-accuracy.json

streams  closed loop of --concurrency users against `python -m backends.sim --model 7b` (its engine model, so
         requests finish at different times), twice: mixed lengths (uniform 128-384 in, 32-96 out) and a lockstep
         workload (every request 256 in / 64 out, so all users finish and resend together: the worst case for
         any client). The first wave (--concurrency requests sent at the same instant) is the warm-up. Error =
         the client's TTFT minus the sim's own (first token written - request received), per request, on the
         same CLOCK_MONOTONIC: what transport and the client add.
trace    `loadgen run --dataset burstgpt-sample.csv --arrival trace --time-scale 0.25`: how late each request
         left against its scaled trace timestamp (sent - scheduled).

These are speeds of this machine (client and target share its cores), so they are measured here and never
asserted in tests: the README quotes this script's table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.process import ServerProcess, find_free_port  # noqa: E402
from backends.protocols.openai import OpenAIProtocol  # noqa: E402
from loadgen.accuracy import timing_error  # noqa: E402
from loadgen.client import Target  # noqa: E402
from loadgen.load import LoadPlan, run_load  # noqa: E402
from loadgen.workload.distributions import LengthDistribution  # noqa: E402
from loadgen.workload.specs import Workload  # noqa: E402

WORKLOADS = {"mixed": ("uniform:128,384", "uniform:32,96"), "lockstep": ("256", "64")}


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def start_sim(log_dir: Path, *args: str) -> tuple[ServerProcess, str]:
    """The simulated engine in its own process, as `loadgen run` launches it (so it never shares our event loop),
    through the project's server lifecycle: its own process group, readiness polled, the group stopped."""
    url = f"http://127.0.0.1:{find_free_port()}"
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    sim = ServerProcess([sys.executable, "-m", "backends.sim", *args, "--port", url.rsplit(":", 1)[1]],
                        log_dir / "sim.log", url + "/health", env={"PYTHONPATH": pythonpath}, startup_timeout=120,
                        name="the sim")
    sim.start()
    try:
        asyncio.run(sim.wait_ready())
    except BaseException:
        sim.stop()
        raise
    return sim, url


def streams_point(name: str, concurrency: int, num_requests: int) -> dict:
    input_len, output_len = WORKLOADS[name]
    with tempfile.TemporaryDirectory() as tmp:
        sim, url = start_sim(Path(tmp), "--model", "7b", "--gpus", "1")
        try:
            workload = Workload(LengthDistribution.parse(input_len), LengthDistribution.parse(output_len), 4096, seed=1)
            plan = LoadPlan(concurrency=concurrency, num_requests=num_requests, warmup=concurrency, timeout_s=120)
            target = Target(url, "llama-2-7b", OpenAIProtocol("completions"))
            outcome = asyncio.run(run_load(target, workload, plan, lambda r: None))
            truth = get_json(url + "/sim/requests")["requests"]
        finally:
            sim.stop()
    err = timing_error(outcome.records, truth, outcome.origin_ns)
    measured = [r for r in outcome.records if r.phase == "measured"]
    chunks = sum(len(r.token_times_ms) for r in measured)
    window = max(r.finished_s for r in measured) - min(r.sent_s for r in measured)
    return {"workload": name, "input_len": input_len, "output_len": output_len, "concurrency": concurrency,
            "requests": len(measured), "failed": sum(not r.ok for r in outcome.records),
            "matched_requests": err["matched_requests"], "chunks_per_s": chunks / window if window > 0 else None,
            "ttft_error_ms": err["ttft_error_ms"], "e2el_error_ms": err["e2el_error_ms"]}


def trace_point(time_scale: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        proc = subprocess.run([sys.executable, "-m", "loadgen", "run", "--dataset", "burstgpt-sample.csv", "--arrival",
                               "trace", "--time-scale", str(time_scale), "--output-len", "8", "--output", str(out),
                               "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"trace replay failed: {proc.stderr.strip()[-500:]}")
        records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines() if line.strip()]
    late = np.array([(r["sent_s"] - r["scheduled_s"]) * 1e3 for r in records])
    return {"dataset": "burstgpt-sample.csv", "time_scale": time_scale, "requests": len(records),
            "lateness_ms": {"min": float(late.min()), "p50": float(np.percentile(late, 50)),
                            "p99": float(np.percentile(late, 99)), "max": float(late.max())}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="streams,trace", help="streams, trace or both (default both)")
    p.add_argument("--workloads", default="mixed,lockstep", help="streams: mixed, lockstep or both")
    p.add_argument("--concurrency", type=int, default=64, help="streams: closed-loop users (default 64)")
    p.add_argument("--num-requests", type=int, default=384, help="streams: measured requests per point (default 384)")
    p.add_argument("--time-scale", type=float, default=0.25, help="trace: timestamp scale (default 0.25)")
    p.add_argument("--output", "--out", dest="output", required=True, help="JSON file for the results")
    args = p.parse_args()
    sections = set(args.sections.split(","))
    if not sections <= {"streams", "trace"} or not set(args.workloads.split(",")) <= set(WORKLOADS):
        p.error("--sections takes streams,trace and --workloads mixed,lockstep")
    report: dict = {"benchmark": "client_accuracy", "command": " ".join(sys.argv),
                    "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
                    "streams": [], "trace": None}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if "streams" in sections:
        for name in args.workloads.split(","):
            report["streams"].append(streams_point(name, args.concurrency, args.num_requests))
            output.write_text(json.dumps(report, indent=1))  # as each point arrives
        print(tabulate([[s["workload"], s["concurrency"], s["requests"], s["failed"], f"{s['chunks_per_s']:,.0f}",
                         *(f"{s['ttft_error_ms'][k]:.2f}" for k in ("min", "p50", "p99", "max"))]
                        for s in report["streams"]],
                       headers=["workload", "streams", "requests", "failed", "chunks/s", "TTFT err min (ms)",
                                "p50 (ms)", "p99 (ms)", "max (ms)"]))
    if "trace" in sections:
        report["trace"] = trace_point(args.time_scale)
        output.write_text(json.dumps(report, indent=1))
        t = report["trace"]
        print(tabulate([[t["dataset"], t["time_scale"], t["requests"],
                         *(f"{t['lateness_ms'][k]:.2f}" for k in ("min", "p50", "p99", "max"))]],
                       headers=["trace", "time scale", "requests", "lateness min (ms)", "p50 (ms)", "p99 (ms)",
                                "max (ms)"]))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
