"""`loadgen locust`: run Locust with loadgen's LLM user, launching the backend like `loadgen run` does."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from loadgen.distributions import LengthDistribution
from loadgen.errors import LoadgenError
from loadgen.launch import backend_name, check_url, open_endpoint, sim_config
from loadgen.options import duration, positive_int
from loadgen.rundir import create_run_dir
from loadgen.units import parse_duration

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def add_locust_arguments(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target")
    t.add_argument("--backend", choices=["sim", "openai", "vllm", "tgi", "trtllm", "lightllm", "sglang"],
                   help="launched (or, with --url, attached) as `loadgen run` does; default sim without --url")
    t.add_argument("--url", help="base URL of a running OpenAI-compatible server")
    t.add_argument("--model", help="sim: catalog model (default 7b); --url: model id (default: first listed)")
    t.add_argument("--gpu", default="h100", help="sim only: catalog GPU (default h100)")
    t.add_argument("--gpus", type=positive_int, default=1, help="sim only: GPUs / tensor parallelism (default 1)")
    t.add_argument("--profile", default=None, help="sim only: measured hardware profile JSON")
    t.add_argument("--endpoint", choices=["completions", "chat", "tgi", "lightllm", "triton"], default=None,
                   help="protocol (default: the backend's own)")
    t.add_argument("--tp", type=positive_int, default=None, help="tensor parallelism of a launched framework")
    t.add_argument("--engine-arg", action="append", help="extra flag for a launched framework (repeatable)")
    t.add_argument("--engine-cmd", help="replace a launched framework's executable")
    t.add_argument("--docker", action="store_true", help="launch the framework's official image")
    t.add_argument("--port", type=positive_int, default=None, help="port of a launched framework")
    t.add_argument("--startup-timeout", type=duration, default=None,
                   help="readiness wait for a launched server (default 120s sim, 30m frameworks)")
    w = p.add_argument_group("workload")
    w.add_argument("--input-len", default="512", help="prompt tokens (N, uniform:A,B, normal:M,S, lognormal:M,S)")
    w.add_argument("--output-len", default="128", help="output tokens, same forms")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--timeout", type=duration, default=600.0, help="per-request limit (default 600s)")
    lc = p.add_argument_group("locust")
    lc.add_argument("--headless", action="store_true", help="no web UI; needs --concurrency and --duration")
    # the same names as `loadgen run`; Locust's own spellings stay as hidden aliases for a release
    lc.add_argument("--concurrency", dest="users", type=positive_int, metavar="N", help="concurrent users (closed loop)")
    lc.add_argument("--users", dest="users", type=positive_int, help=argparse.SUPPRESS)
    lc.add_argument("--spawn-rate", type=float, default=None, help="users started per second")
    lc.add_argument("--duration", dest="run_time", help="stop after this long, e.g. 30s or 2m (headless)")
    lc.add_argument("--run-time", dest="run_time", help=argparse.SUPPRESS)
    lc.add_argument("--web-host", default="127.0.0.1", help="web UI address (default 127.0.0.1)")
    lc.add_argument("--web-port", type=int, default=8089, help="web UI port (default 8089)")
    lc.add_argument("--master", action="store_true", help="run as Locust master (workers connect to it)")
    lc.add_argument("--worker", action="store_true", help="run as a Locust worker of --master-host")
    lc.add_argument("--master-host", default="127.0.0.1", help="master address for --worker")
    lc.add_argument("--master-port", type=int, default=5557, help="master port (default 5557)")
    lc.add_argument("--workers", type=int, default=0, help="start N local worker processes (multi-core load)")
    lc.add_argument("--output", help="run directory for requests.jsonl, summary.json and Locust's CSVs")
    lc.add_argument("--out", dest="output", help=argparse.SUPPRESS)
    lc.add_argument("--print-locustfile", action="store_true", help="print the locustfile's path and exit")


def cmd_locust(args: argparse.Namespace) -> int:
    if args.print_locustfile:
        print(LOCUSTFILE)
        return 0
    try:
        import locust  # noqa: F401
    except ImportError:
        raise LoadgenError("`loadgen locust` needs Locust: pip install -e '.[locust]' (or pip install locust)") from None
    LengthDistribution.parse(args.input_len, "--input-len")
    LengthDistribution.parse(args.output_len, "--output-len")
    if args.master and args.worker:
        raise LoadgenError("--master and --worker exclude each other")
    if args.headless and not (args.users and args.run_time):
        raise LoadgenError("--headless needs --concurrency N and --duration (e.g. --concurrency 64 --duration 2m)")
    if args.workers < 0:
        raise LoadgenError("--workers must be 0 or more")
    if args.run_time:  # loadgen's duration forms (500ms, 1.5m) in whole seconds, which Locust's --run-time reads
        args.run_time = str(max(1, round(parse_duration(args.run_time, "--duration"))))
    args.ignore_eos = True
    args.max_context = None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.worker:  # a worker only generates load against the URL the master's users target
        if not args.url:
            raise LoadgenError("--worker needs --url of the server the master's run targets")
        return _run_locust(args, check_url(args.url), args.model, 4096, args.endpoint or "completions", False, None)
    backend = backend_name(args)
    config = sim_config(args) if backend == "sim" else None
    run_dir = create_run_dir(args.output or f"results/{stamp}-locust-{backend}", backend, args.model or backend)

    async def go() -> int:
        async with open_endpoint(args, config, run_dir, {}) as ep:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, _run_locust, args, ep.url, ep.model, ep.max_context,
                                              ep.protocol_name, ep.simulated, run_dir)

    code = asyncio.run(go())
    print(f"results: {run_dir}", file=sys.stderr)
    return code


def _run_locust(args, url: str, model: str | None, max_context: int, endpoint: str, simulated: bool,
                run_dir: Path | None) -> int:
    """Run Locust (and local workers) against `url`; returns Locust's exit code."""
    base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", url,
            "--loadgen-endpoint", endpoint, "--loadgen-input-len", args.input_len,
            "--loadgen-output-len", args.output_len, "--loadgen-seed", str(args.seed),
            "--loadgen-timeout", str(args.timeout), "--loadgen-max-context", str(max_context)]
    if model:
        base += ["--loadgen-model", model]
    if args.backend:
        base += ["--loadgen-backend", args.backend]
    if simulated:
        base += ["--loadgen-simulated"]
    # Users finish the request in flight when the test stops, as `loadgen run --duration` does; a master waits for
    # its workers to say they stopped (the locustfile's stop handshake), and each worker lets its users finish.
    base += ["--stop-timeout", f"{args.timeout:g}"]
    procs: list[subprocess.Popen] = []
    try:
        if args.worker:
            return _wait(subprocess.Popen(base + ["--worker", "--master-host", args.master_host,
                                                  "--master-port", str(args.master_port)]), procs)
        cmd = base + ["--loadgen-run-dir", str(run_dir), "--csv", str(run_dir / "locust"),
                      "--web-host", args.web_host, "--web-port", str(args.web_port)]
        if args.headless:
            cmd += ["--headless", "--users", str(args.users), "--run-time", args.run_time,
                    "--spawn-rate", str(args.spawn_rate or args.users)]
        elif args.users:
            cmd += ["--users", str(args.users), "--spawn-rate", str(args.spawn_rate or args.users)]
        if args.master or args.workers:
            cmd += ["--master", "--master-bind-host", "127.0.0.1" if args.workers and not args.master else "*",
                    "--master-bind-port", str(args.master_port)]
            if args.workers:
                cmd += ["--expect-workers", str(args.workers)]
        master = subprocess.Popen(cmd)
        procs.append(master)
        time.sleep(1.0)
        for _ in range(args.workers):
            procs.append(subprocess.Popen(base + ["--worker", "--master-host", "127.0.0.1",
                                                  "--master-port", str(args.master_port)]))
        return _wait(master, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait(main: subprocess.Popen, procs: list[subprocess.Popen]) -> int:
    """Wait for Locust; Ctrl-C or SIGTERM is forwarded as SIGTERM, Locust's graceful stop (which writes the
    summary), and a second one stops everything at once."""
    if main not in procs:
        procs.append(main)
    hits = 0

    def forward(signum, frame) -> None:
        nonlocal hits
        hits += 1
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if hits == 1 else signal.SIGKILL)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return main.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
