"""The measurement protocol that benchmarks/sim_predictions.py predicted, run with loadgen against a real vLLM:
capacity from one closed loop, then Poisson points at fractions of that measured capacity and two closed loops.
Writes one JSON, updated after every point (a cut-off call keeps what it measured), and prints a line per point.

    python benchmarks/serving_protocol.py --config a --model-dir /tmp/models/7b --engine-path /tmp/site \
        --out /tmp/out/h200-a
    # one server over several device calls (each call has a time limit):
    python benchmarks/serving_protocol.py --config c ... --serve-detached          # prints the URL, leaves it up
    python benchmarks/serving_protocol.py --config c ... --url URL --steps capacity,p0.25,p0.5
    python benchmarks/serving_protocol.py --config c ... --url URL --steps p0.8,p0.95,p1.1,c1,c32 --stop-server

Steps: `capacity` (closed loop of 256 users), `pF` (Poisson at F x the measured capacity, read from the JSON when
an earlier call measured it), `cN` (closed loop of N users for its protocol duration). The server is launched with
the engine settings the predictions assumed (max 256 sequences, 8,192 batched tokens, 4,096-token context).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sim_predictions import (  # noqa: E402
    CAPACITY_SECONDS,
    CAPACITY_USERS,
    CLOSED_SECONDS,
    CONFIGS,
    ENGINE,
    MAX_CONTEXT,
    POISSON_FRACTIONS,
    completion_rate,
    poisson_requests,
)
from vllm_serving import engine_env, server_env, start_server  # noqa: E402

from loadgen.metrics import tpot_ms, ttft_ms  # noqa: E402
from loadgen.records import read_records  # noqa: E402

DEFAULT_STEPS = ["capacity", *(f"p{f:g}" for f in POISSON_FRACTIONS), *(f"c{u}" for u in CLOSED_SECONDS)]


def loadgen_argv(url: str, model: str, cfg, load: list[str], out: Path, seed: int) -> list[str]:
    return [sys.executable, "-m", "loadgen", "run", "--backend", "vllm", "--url", url, "--model", model,
            "--tokenizer", model, "--input-len", cfg.input_len, "--output-len", cfg.output_len,
            "--max-context", str(MAX_CONTEXT), *load, "--seed", str(seed), "--scrape-interval", "1s",
            "--output", str(out), "--quiet"]


def run_point(argv: list[str], out: Path, env: dict, timeout: float) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)
    t1 = time.perf_counter()
    result = {"command": argv, "returncode": proc.returncode, "wall_s": t1 - t0, "clock_window_s": [t0, t1]}
    summary = out / "summary.json"
    if summary.exists():
        result["summary"] = json.loads(summary.read_text())
        # every measured request's send time, lengths and latencies: a prediction can replay exactly these
        # arrivals and lengths (benchmarks/sim_score.py), and every percentile can be recomputed
        measured = [r for r in read_records(out / "requests.jsonl") if r.phase == "measured" and r.ok]
        result["requests_fields"] = ["sent_s", "input_tokens", "output_tokens", "ttft_ms", "tpot_ms", "e2el_ms"]
        result["requests"] = [[round(r.sent_s, 5), r.input_tokens, r.output_tokens, round(ttft_ms(r), 3),
                               None if (t := tpot_ms(r)) is None else round(t, 4),
                               round((r.finished_s - r.sent_s) * 1e3, 3)] for r in measured]
    else:
        result["stderr"] = proc.stderr[-3000:]
    return result


def stop_detached(pid: int, grace_s: float = 60.0) -> None:
    """SIGTERM to the detached server's process group, SIGKILL after the grace period; returns once it is gone,
    so the next server finds the GPU's memory free."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(pid, signal.SIGKILL)
        time.sleep(2)
    except ProcessLookupError:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, choices=[c.name for c in CONFIGS])
    p.add_argument("--model-dir", required=True, help="from `loadgen make-model` (no weights: --load-format dummy)")
    p.add_argument("--engine-path", help="folder with vLLM installed (pip --target); goes on PYTHONPATH")
    p.add_argument("--engine-python", default=sys.executable)
    p.add_argument("--steps", default=",".join(DEFAULT_STEPS), help=f"default {','.join(DEFAULT_STEPS)}")
    p.add_argument("--url", help="a server started by an earlier --serve-detached")
    p.add_argument("--serve-detached", action="store_true", help="start the server, print its URL, leave it up")
    p.add_argument("--stop-server", action="store_true", help="with --url: stop that server after the steps")
    p.add_argument("--step-trace", action="store_true", help="vLLM engine-core step trace (benchmarks/vllm_step_trace)")
    p.add_argument("--seed", type=int, default=300)
    p.add_argument("--startup-timeout", type=float, default=500.0)
    p.add_argument("--point-timeout", type=float, default=400.0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg = next(c for c in CONFIGS if c.name == args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env, extra = engine_env(args.engine_path)
    model = str(Path(args.model_dir).resolve())
    # vllm_serving.start_server reads these attributes
    args.engine_arg = ["--max-num-seqs", str(ENGINE["max_num_seqs"]),
                       "--max-num-batched-tokens", str(ENGINE["max_batched_tokens"])]
    args.max_model_len = MAX_CONTEXT
    server_extra = server_env(extra, env, out / "steps" if args.step_trace else None)
    report_path = out / "serving-protocol.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {
        "benchmark": "serving_protocol", "config": cfg.name, "model": cfg.model, "input_len": cfg.input_len,
        "output_len": cfg.output_len, "engine": {**ENGINE, "max_model_len": MAX_CONTEXT}, "points": []}
    try:
        import torch

        report.setdefault("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    except ImportError:
        report.setdefault("gpu", None)
    if args.serve_detached:
        detached, url, info = start_server(args, model, out, server_extra)
        report["server"] = {"url": url, "pid": detached.proc.pid, **info}
        report_path.write_text(json.dumps(report, indent=1))
        print(url, flush=True)
        return 0
    server = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        server, url, report["server"] = start_server(args, model, out, server_extra)
    try:
        if not (out / "warmup").exists():  # the first requests after start compile and capture
            run_point(loadgen_argv(url, model, cfg, ["--concurrency", "16", "--num-requests", "64"], out / "warmup",
                                   args.seed - 1), out / "warmup", env, args.point_timeout)
        for k, step in enumerate(args.steps.split(",")):
            seed = args.seed + len(report["points"]) + k
            if step == "capacity":
                load = ["--concurrency", str(CAPACITY_USERS), "--duration", f"{CAPACITY_SECONDS:g}s"]
                point = {"kind": "capacity", "users": CAPACITY_USERS}
            elif step.startswith("p"):
                capacity = report.get("measured_capacity_per_s")
                if not capacity:
                    raise SystemExit(f"step {step}: no measured capacity yet; run the 'capacity' step first")
                rate = round(float(step[1:]) * capacity, 3)
                load = ["--qps", str(rate), "--num-requests", str(poisson_requests(rate))]
                point = {"kind": "poisson", "fraction": float(step[1:]), "offered_per_s": rate}
            elif step.startswith("c"):
                users = int(step[1:])
                load = ["--concurrency", str(users), "--duration", f"{CLOSED_SECONDS[users]:g}s"]
                point = {"kind": "closed", "users": users}
            else:
                raise SystemExit(f"unknown step {step!r}: use capacity, pF or cN")
            run_dir = out / step
            point.update(run_point(loadgen_argv(url, model, cfg, load, run_dir, seed), run_dir, env,
                                   args.point_timeout))
            s = point.get("summary") or {}
            if step == "capacity" and s:
                first = min(r[0] for r in point["requests"])
                report["measured_capacity_per_s"] = completion_rate([r[0] + r[5] / 1e3 - first
                                                                     for r in point["requests"]])
            report["points"].append(point)
            report_path.write_text(json.dumps(report, indent=1))
            if s:
                print(f"{step:>9}: {s['throughput']['requests_per_s']:.2f} req/s, TTFT p50/p90 "
                      f"{s['ttft_ms']['p50']:.1f}/{s['ttft_ms']['p90']:.1f} ms, TPOT p50/p90 "
                      f"{s['tpot_ms']['p50']:.2f}/{s['tpot_ms']['p90']:.2f} ms, E2EL p50 {s['e2el_ms']['p50']:.0f} ms, "
                      f"{s['throughput']['output_tokens_per_s']:.0f} out tok/s, {point['wall_s']:.0f} s", flush=True)
            else:
                print(f"{step:>9}: failed (exit {point['returncode']}): {point.get('stderr', '')[-500:]}", flush=True)
    finally:
        if server is not None:
            server.stop()
        elif args.stop_server and report.get("server", {}).get("pid"):
            stop_detached(report["server"]["pid"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
