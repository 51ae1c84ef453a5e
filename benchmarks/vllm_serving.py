"""vLLM on a GPU, measured twice per load point: by `loadgen` and by vLLM's own benchmark client, one after the
other against the same server; prints a table and writes one JSON (updated after every point, so a cut-off run
keeps what it measured).

    python benchmarks/vllm_serving.py --model 7b --engine-path /tmp/site --points poisson:1,2,4 closed:1,8 \
        --out results/h100-vllm

The model directory comes from `loadgen make-model` (no weights: vLLM's --load-format dummy), so nothing is
downloaded. vLLM's client is `vllm bench serve` (its module, vllm.benchmarks.serve) with the random dataset at the
same fixed lengths; both force the output length (ignore_eos).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.launch_spec import LaunchRequest  # noqa: E402
from backends.process import ServerProcess, find_free_port  # noqa: E402
from backends.vllm import bench_serve_argv, launch  # noqa: E402
from loadgen.metrics import tpot_ms, ttft_ms  # noqa: E402
from loadgen.records import read_records  # noqa: E402
from loadgen.telemetry.server_metrics import read_server_metrics, scraper_argv, summarize_server_metrics  # noqa: E402


def parse_points(specs: list[str]) -> list[tuple[str, float]]:
    points = []
    for spec in specs:
        kind, _, values = spec.partition(":")
        if kind not in ("poisson", "closed") or not values:
            raise SystemExit(f"--points {spec!r}: use poisson:R1,R2,... or closed:C1,C2,...")
        points += [(kind, float(v)) for v in values.split(",")]
    return points


def requests_for(kind: str, value: float, seconds: float, rounds: int = 4) -> int:
    """Enough requests for about `seconds` of load (closed loop: `rounds` per stream), at least 20."""
    return max(20, int(value * seconds) if kind == "poisson" else int(value * rounds))


def loadgen_point(url: str, model: str, kind: str, value: float, n: int, args, out: Path, env, seed: int,
                  trace: Path | None = None) -> dict:
    """trace: replay these send times (vLLM's client's, for a paired comparison) instead of drawing a schedule."""
    load = ["--qps", str(value)] if kind == "poisson" else ["--concurrency", str(int(value))]
    if trace is not None:
        load = ["--dataset", str(trace), "--dataset-format", "burstgpt", "--arrival", "trace", "--time-scale", "1"]
    cmd = [sys.executable, "-m", "loadgen", "run", "--backend", "vllm", "--url", url, "--model", model,
           "--tokenizer", model, "--input-len", args.input_len, "--output-len", args.output_len,
           *load, "--num-requests", str(n), "--seed", str(seed), "--scrape-interval", "1s", "--output", str(out), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=args.point_timeout)
    t1 = time.perf_counter()
    # the run's window on CLOCK_MONOTONIC, which the server's step trace (--step-trace) shares
    result = {"command": cmd, "returncode": proc.returncode, "wall_s": t1 - t0, "clock_window_s": [t0, t1]}
    if (out / "summary.json").exists():
        result["summary"] = json.loads((out / "summary.json").read_text())
        measured = [r for r in read_records(out / "requests.jsonl") if r.phase == "measured" and r.ok]
        result["ttfts_ms"] = [ttft_ms(r) for r in measured]
        # the run's own schedule and what each request saw, small enough to keep in the JSON: the sim replays
        # exactly these send times (benchmarks/sim_validation.py), so its medians compare with this run's
        result["requests"] = [[round(r.sent_s, 5), round(ttft_ms(r), 3),
                               None if (tpot := tpot_ms(r)) is None else round(tpot, 4)] for r in measured]
        result["requests_fields"] = ["sent_s", "ttft_ms", "tpot_ms"]
        # vLLM's client starts its clock before aiohttp builds and writes the request; loadgen's starts when
        # the body reaches the socket. From the scheduled send time, loadgen's TTFT includes that client work
        # too (and its own lateness): the like-for-like figure for the comparison, open loops only.
        if measured and all(r.scheduled_s is not None for r in measured):
            result["ttfts_from_scheduled_ms"] = [(r.first_token_s - r.scheduled_s) * 1e3 for r in measured]
    else:
        result["stderr"] = proc.stderr[-2000:]
    return result


def vllm_bench_point(url: str, model: str, kind: str, value: float, n: int, args, out: Path, env,
                     seed: int) -> dict:
    rate = ["--request-rate", str(value)] if kind == "poisson" else ["--request-rate", "inf",
                                                                      "--max-concurrency", str(int(value))]
    out.mkdir(parents=True, exist_ok=True)
    cmd = bench_serve_argv(
        args.engine_python, "--backend", "vllm", "--base-url", url, "--endpoint", "/v1/completions", "--model", model,
        "--tokenizer", model, "--dataset-name", "random", "--random-input-len", args.input_len,
        "--random-output-len", args.output_len, "--random-range-ratio", "0", "--num-prompts", str(n), *rate,
        "--ignore-eos", "--seed", str(seed), "--temperature", "0", "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,99", "--save-result", "--save-detailed", "--result-dir", str(out),
        "--result-filename", "vllm-bench.json", "--disable-tqdm")
    # the server's own view of this client's run: its exact mean TTFT (histogram _sum/_count) is the reference
    # both clients' TTFT can be checked against (loadgen's scraper child process, run here around vLLM's client)
    scraper = subprocess.Popen(scraper_argv(url + "/metrics", out / "server_metrics.jsonl", 1.0), cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, text=True)
    scraper.stdout.readline()  # after the baseline scrape
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=args.point_timeout)
    finally:
        scraper.terminate()  # SIGTERM: one final scrape, then exit
        scraper.wait(timeout=30)
    t1 = time.perf_counter()
    result = {"command": cmd, "returncode": proc.returncode, "wall_s": t1 - t0, "clock_window_s": [t0, t1],
              "server_metrics": summarize_server_metrics(read_server_metrics(out / "server_metrics.jsonl"))}
    (out / "vllm-bench.log").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
    path = out / "vllm-bench.json"
    if path.exists():
        data = json.loads(path.read_text())
        result["result"] = {k: v for k, v in data.items() if not isinstance(v, list)}  # percentiles, not per-request
        result["ttfts_ms"] = [t * 1e3 for t in data.get("ttfts") or [] if t]  # per request (pooled over repeats)
    else:
        result["stderr"] = proc.stderr[-2000:]
    return result


def write_trace(bench_json: Path, out: Path) -> int:
    """vLLM's client's actual send times and lengths as a BurstGPT-style CSV trace, for loadgen to replay."""
    data = json.loads(bench_json.read_text())
    rows = sorted(zip(data["start_times"], data["input_lens"], data["output_lens"]))
    t0 = rows[0][0]
    out.write_text("Timestamp,Request tokens,Response tokens\n" + "".join(
        f"{t - t0:.6f},{n_in},{n_out}\n" for t, n_in, n_out in rows))
    return len(rows)


def medians(point: dict) -> dict:
    """Side by side: loadgen's and vLLM's client, median ms and output tok/s."""
    row: dict = {}
    s = (point.get("loadgen") or {}).get("summary") or {}
    v = (point.get("vllm_bench") or {}).get("result") or {}
    for metric in ("ttft", "tpot", "itl", "e2el"):
        row[f"loadgen_{metric}_p50_ms"] = (s.get(f"{metric}_ms") or {}).get("p50")
        row[f"vllm_{metric}_p50_ms"] = v.get(f"median_{metric}_ms")
    for who, sm in (("loadgen", s.get("server_metrics")), ("vllm", (point.get("vllm_bench") or {}).get("server_metrics"))):
        row[f"server_ttft_mean_ms_during_{who}"] = ((sm or {}).get("server_ttft_ms") or {}).get("mean")
        row[f"server_phases_ms_during_{who}"] = (sm or {}).get("request_phases_mean_ms")
    from statistics import median

    from_scheduled = (point.get("loadgen") or {}).get("ttfts_from_scheduled_ms")
    row["loadgen_ttft_from_scheduled_p50_ms"] = median(from_scheduled) if from_scheduled else None
    row["loadgen_ttft_mean_ms"] = (s.get("ttft_ms") or {}).get("mean")
    row["vllm_ttft_mean_ms"] = v.get("mean_ttft_ms")
    row["loadgen_output_tok_s"] = (s.get("throughput") or {}).get("output_tokens_per_s")
    row["vllm_output_tok_s"] = v.get("output_throughput")
    return row


def engine_env(engine_path: str | None) -> tuple[dict, dict]:
    """The clients' environment, and the variables the server needs on top of it: no hub (the model is local),
    vLLM's own sampler (FlashInfer's is not carried), and the engine's folder first on PYTHONPATH."""
    env = dict(os.environ)
    extra = {"HF_HUB_OFFLINE": "1", "VLLM_USE_FLASHINFER_SAMPLER": "0"}
    if engine_path:
        extra["PYTHONPATH"] = os.pathsep.join([engine_path, str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env, extra


def server_env(extra: dict, env: dict, step_trace: Path | None) -> dict:
    """With `step_trace`, the server imports benchmarks/vllm_step_trace's sitecustomize and writes every engine
    step under that prefix."""
    server_extra = dict(extra)
    if step_trace is not None:
        server_extra["DISSECT_STEP_TRACE"] = str(step_trace.resolve())
        server_extra["PYTHONPATH"] = os.pathsep.join([str(ROOT / "benchmarks" / "vllm_step_trace"),
                                                      env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return server_extra


def start_server(args, model: str, log_dir: Path, env_extra: dict) -> tuple[ServerProcess, str, dict]:
    req = LaunchRequest(model=model, engine_cmd=(args.engine_python,), port=find_free_port(),
                        engine_args=tuple(args.engine_arg), max_model_len=args.max_model_len)
    spec = launch(req)
    env = {**spec.env, **env_extra}
    server = ServerProcess(spec.argv, log_dir / "server.log", spec.url + spec.ready_path, env=env,
                           startup_timeout=args.startup_timeout, name="vllm")
    server.start()
    try:
        asyncio.run(server.wait_ready())
    except BaseException:
        server.stop()
        raise
    return server, spec.url, {"argv": spec.argv, "env": env, "weights": spec.weights,
                              "ready_after_s": server.ready_after_s}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="7b", help="catalog model for `loadgen make-model` (default 7b)")
    p.add_argument("--model-dir", default="/tmp/dissect-model-7b")
    p.add_argument("--engine-path", help="folder with vLLM installed (pip --target); goes on PYTHONPATH")
    p.add_argument("--engine-python", default=sys.executable,
                   help="python that has vLLM (server and its bench client; default: this one)")
    p.add_argument("--engine-arg", action="append", default=[], help="extra vLLM flag (repeatable)")
    p.add_argument("--points", nargs="+", default=["poisson:1,2,4,8,16,32", "closed:1,8,32,128"])
    p.add_argument("--seconds", type=float, default=15.0, help="load per Poisson point (default 15 s)")
    p.add_argument("--repeats", type=int, default=1, help="runs per point and client, alternating who goes first")
    p.add_argument("--paired", action="store_true",
                   help="Poisson points: vLLM's client first, then loadgen replays its exact send times and lengths "
                        "(a trace), so both clients measure the same load")
    p.add_argument("--replays", type=int, default=1,
                   help="with --paired: loadgen runs on vLLM's client's send times this many times (each with fresh "
                        "prompts): how much the same client's TTFT median moves under the same load")
    p.add_argument("--rounds", type=int, default=4, help="closed loops: requests per user (default 4)")
    p.add_argument("--seed", type=int, default=100, help="first of the seeds; each run gets its own (default 100)")
    p.add_argument("--input-len", default="512")
    p.add_argument("--output-len", default="128")
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--startup-timeout", type=float, default=400.0)
    p.add_argument("--point-timeout", type=float, default=240.0)
    p.add_argument("--extra-loadgen", action="append", default=[],
                   help="NAME=ARGS: an extra loadgen-only point, e.g. 'chat=--scenario chat --qps 4 --num-requests 60'")
    p.add_argument("--url", help="measure a server that is already running (started by hand or by an earlier "
                                  "--serve-detached); it is left running")
    p.add_argument("--serve-detached", action="store_true",
                   help="start the server in its own session, print its URL, and exit leaving it running (so one "
                        "server can serve several invocations on a machine that limits a command's time)")
    p.add_argument("--step-trace", action="store_true",
                   help="record every engine step's scheduling, launch, wait and output times inside vLLM's engine "
                        "core (benchmarks/vllm_step_trace) into OUT/steps.<pid>.jsonl; read them with "
                        "benchmarks/step_trace_report.py")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env, extra = engine_env(args.engine_path)
    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").exists():
        subprocess.run([sys.executable, "-m", "loadgen", "make-model", "--model", args.model, "--out", str(model_dir),
                        "--force"], cwd=ROOT, check=True, env=env)
    model = str(model_dir.resolve())
    report: dict = {"benchmark": "vllm_serving", "model": args.model, "input_len": args.input_len,
                    "output_len": args.output_len, "points": []}
    try:
        import torch

        report["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        report["gpu"] = None
    report_path = out / "vllm-serving.json"

    server_extra = server_env(extra, env, out / "steps" if args.step_trace else None)
    if args.serve_detached:
        _, url, info = start_server(args, model, out, server_extra)  # a new session: it outlives this process
        (out / "server.json").write_text(json.dumps({"url": url, **info}, indent=1))
        print(url)
        return 0
    if args.url:
        server, url = None, args.url.rstrip("/")
        started = out / "server.json"
        report["server"] = json.loads(started.read_text()) if started.exists() else {"url": url, "started_by": "hand"}
    else:
        server, url, report["server"] = start_server(args, model, out, server_extra)
    try:
        # warm-up: the first requests after start compile and capture; neither client should pay for that
        if not (out / "warmup").exists():
            loadgen_point(url, model, "closed", 8, 32, args, out / "warmup", env, seed=args.seed)
        # Every run gets prompts no run sent before: vLLM's prefix cache keeps earlier prompts, and a repeated
        # prompt would measure the cache instead of prefill (the first version of this benchmark did exactly that).
        runs = 0
        for kind, value in parse_points(args.points):
            n = requests_for(kind, value, args.seconds, args.rounds)
            tag = f"{kind}-{value:g}"
            for rep in range(args.repeats):
                paired = args.paired and kind == "poisson"
                # alternate who goes first, so a drift of the server over time does not favour one client; a
                # paired point needs vLLM's client first (loadgen replays its send times)
                order = ("loadgen", "vllm_bench") if rep % 2 == 0 and not paired else ("vllm_bench", "loadgen")
                point = {"kind": kind, "value": value, "requests": n, "repeat": rep, "order": list(order)}
                trace = None
                for who in order:
                    runs += 1
                    run_dir = out / f"{tag}-r{rep}-{who}"
                    if who == "loadgen":
                        run = loadgen_point(url, model, kind, value, n, args, run_dir, env, seed=args.seed + runs,
                                            trace=trace)
                    else:
                        run = vllm_bench_point(url, model, kind, value, n, args, run_dir, env, seed=args.seed + runs)
                        if paired and (run_dir / "vllm-bench.json").exists():
                            trace = run_dir / "send-times.csv"
                            write_trace(run_dir / "vllm-bench.json", trace)
                    point[who] = run
                # paired only where vLLM's client produced send times to replay (else loadgen drew its own)
                point["paired"] = trace is not None
                if trace is not None and args.replays > 1:
                    again = []
                    for k in range(1, args.replays):
                        runs += 1
                        replay_run = loadgen_point(url, model, kind, value, n, args,
                                                   out / f"{tag}-r{rep}-loadgen-replay{k}", env,
                                                   seed=args.seed + runs, trace=trace)
                        es = replay_run.get("summary") or {}
                        again.append({"ttft_p50_ms": (es.get("ttft_ms") or {}).get("p50"),
                                      "ttft_mean_ms": (es.get("ttft_ms") or {}).get("mean"),
                                      "tpot_p50_ms": (es.get("tpot_ms") or {}).get("p50"),
                                      "server_ttft_mean_ms": ((es.get("server_metrics") or {}).get("server_ttft_ms")
                                                              or {}).get("mean"),
                                      "requests": replay_run.get("requests")})
                    point["loadgen_replays"] = again
                point["medians"] = medians(point)
                report["points"].append(point)
                report_path.write_text(json.dumps(report, indent=1))
                m = point["medians"]
                print(f"{tag:>12} r{rep}  TTFT mean {m['loadgen_ttft_mean_ms']} (server {m['server_ttft_mean_ms_during_loadgen']}) / "
                      f"{m['vllm_ttft_mean_ms']} (server {m['server_ttft_mean_ms_during_vllm']})  "
                      f"TTFT p50 {m['loadgen_ttft_p50_ms']} / {m['vllm_ttft_p50_ms']}  "
                      f"TPOT {m['loadgen_tpot_p50_ms']} / {m['vllm_tpot_p50_ms']}  "
                      f"tok/s {m['loadgen_output_tok_s']} / {m['vllm_output_tok_s']}  "
                      f"phases {m['server_phases_ms_during_loadgen']}", flush=True)
        for spec in args.extra_loadgen:
            name, _, rest = spec.partition("=")
            cmd = [sys.executable, "-m", "loadgen", "run", "--backend", "vllm", "--url", url, "--model", model,
                   "--tokenizer", model, "--seed", str(args.seed + 99), *rest.split(), "--output", str(out / name),
                   "--quiet"]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=args.point_timeout)
            summary = out / name / "summary.json"
            report.setdefault("extra", []).append({"name": name, "command": cmd, "returncode": proc.returncode,
                                                   "summary": json.loads(summary.read_text()) if summary.exists() else None})
            report_path.write_text(json.dumps(report, indent=1))
    finally:
        if server is not None:
            server.stop()

    from statistics import median

    from tabulate import tabulate

    pooled = {}
    for pt in report["points"]:
        key = f"{pt['kind']} {pt['value']:g}"
        for who in ("loadgen", "vllm_bench"):
            pooled.setdefault(key, {}).setdefault(who, []).extend((pt.get(who) or {}).get("ttfts_ms") or [])
        pooled[key].setdefault("loadgen_from_scheduled", []).extend(
            (pt.get("loadgen") or {}).get("ttfts_from_scheduled_ms") or [])
    report["pooled_ttft_median_ms"] = {
        key: {"loadgen": median(v["loadgen"]) if v["loadgen"] else None, "loadgen_n": len(v["loadgen"]),
              "vllm_bench": median(v["vllm_bench"]) if v["vllm_bench"] else None, "vllm_bench_n": len(v["vllm_bench"]),
              "loadgen_from_scheduled": median(v["loadgen_from_scheduled"]) if v["loadgen_from_scheduled"] else None}
        for key, v in pooled.items()}
    for pt in report["points"]:
        for who in ("loadgen", "vllm_bench"):
            (pt.get(who) or {}).pop("ttfts_ms", None)
            (pt.get(who) or {}).pop("ttfts_from_scheduled_ms", None)  # on disk in the run directories; the JSON keeps the medians
    report_path.write_text(json.dumps(report, indent=1))
    for key, v in report["pooled_ttft_median_ms"].items():
        if v["loadgen"] and v["vllm_bench"]:
            print(f"pooled TTFT median {key}: loadgen {v['loadgen']:.2f} (n={v['loadgen_n']}) vs vLLM's client "
                  f"{v['vllm_bench']:.2f} (n={v['vllm_bench_n']}): {v['vllm_bench'] / v['loadgen'] - 1:+.1%}"
                  + (f"; loadgen from the scheduled send {v['loadgen_from_scheduled']:.2f}: "
                     f"{v['vllm_bench'] / v['loadgen_from_scheduled'] - 1:+.1%}" if v["loadgen_from_scheduled"] else ""))

    rows = []
    for pt in report["points"]:
        m = pt["medians"]
        rows.append([f"{pt['kind']} {pt['value']:g}", *(m[f"{c}_{x}_p50_ms"] for x in ("ttft", "tpot", "itl", "e2el")
                                                         for c in ("loadgen", "vllm")),
                     m["loadgen_output_tok_s"], m["vllm_output_tok_s"]])
    print(tabulate(rows, headers=["point", "TTFT lg", "TTFT vllm", "TPOT lg", "TPOT vllm", "ITL lg", "ITL vllm",
                                  "E2EL lg", "E2EL vllm", "tok/s lg", "tok/s vllm"], floatfmt=".2f"))
    print(f"wrote {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
