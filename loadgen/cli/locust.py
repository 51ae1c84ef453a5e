"""`loadgen locust`: run Locust with loadgen's LLM user, launching the backend like `loadgen run` does. It takes
the same RunConfig (target, workload, SLO) and hands the workload to the locustfile as --loadgen-* options."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from backends.registry import FRAMEWORKS
from loadgen.cli.common import prepare, run_config
from loadgen.config import RUN_SECTIONS, LocustConfig, RunConfig, add_arguments, given, to_flags
from loadgen.config.commands import LOCUST_CLI_SKIP, LOCUSTFILE_FIELDS
from loadgen.config.sources import build_section
from loadgen.endpoint import open_endpoint
from loadgen.errors import LoadgenError
from loadgen.rundir import create_run_dir

LOCUSTFILE = Path(__file__).resolve().parent.parent / "locust" / "locustfile.py"
SECTIONS = {**{k: v for k, v in RUN_SECTIONS.items() if k != "telemetry"}, "locust": LocustConfig}
# Locust's own spellings, hidden, for a release
ALIASES = {"load.concurrency": ("--users",), "load.duration": ("--run-time",), "output.dir": ("--out",)}


def add_locust_parser(sub) -> None:
    loc = sub.add_parser("locust", help="run Locust with LLM metrics (web UI, headless, master/worker)",
                         description="Locust with loadgen's LLM user: TTFT, TPOT, ITL and E2E as Locust entries, and "
                                     "the same run directory as `loadgen run`.")
    add_arguments(loc, SECTIONS, skip=LOCUST_CLI_SKIP, aliases=ALIASES)
    loc.set_defaults(func=cmd_locust)


def cmd_locust(args: argparse.Namespace) -> int:
    flags = given(args)
    locust_config = build_section(LocustConfig, "locust", flags)
    if locust_config.print_locustfile:
        print(LOCUSTFILE)
        return 0
    config = run_config(args)
    # found, not imported: importing Locust here would monkey-patch this process with gevent for nothing
    if importlib.util.find_spec("locust") is None:
        raise LoadgenError("`loadgen locust` needs Locust: pip install -e '.[locust]' (or pip install locust)")
    if locust_config.headless and not (config.load.concurrency and config.load.duration):
        raise LoadgenError("--headless needs --concurrency N and --duration (e.g. --concurrency 64 --duration 2m)")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if locust_config.worker:  # a worker only generates load against the URL the master's users target
        if not config.target.url:
            raise LoadgenError("--worker needs --url of the server the master's run targets")
        return _run_locust(config, locust_config, config.target.url, config.target.model, 4096,
                           config.target.endpoint or "completions", False, None)
    prepared = prepare(config)
    backend = config.target.backend
    run_dir = create_run_dir(config.output.dir or f"results/{stamp}-locust-{backend}", backend,
                             config.target.model or backend)

    async def go() -> int:
        async with open_endpoint(config, prepared.sim, run_dir, prepared.headers) as ep:
            # Locust runs in this (main) thread, where its signal forwarding can be installed; nothing else runs on
            # the loop meanwhile: it only holds the endpoint open until Locust is done
            return _run_locust(config, locust_config, ep.url, ep.model, ep.max_context, ep.protocol_name,
                               ep.simulated, run_dir)

    code = asyncio.run(go())
    print(f"results: {run_dir}", file=sys.stderr)
    return code


def locustfile_argv(config: RunConfig, url: str, model: str | None, max_context: int, endpoint: str,
                    simulated: bool) -> list[str]:
    """The locustfile's options for this run: its workload, SLO and timeout as --loadgen-<flag>, read back by the
    same kinds, so every workload option of `loadgen run` reaches Locust's users."""
    here = replace(config, target=replace(config.target, model=model, endpoint=endpoint),
                   workload=replace(config.workload, max_context=max_context))
    argv = ["--host", url]
    for section, names in LOCUSTFILE_FIELDS.items():
        argv += to_flags(getattr(here, section), names, prefix="--loadgen-")
    if config.target.backend in FRAMEWORKS:  # the server's quirks (vLLM: usage in every chunk)
        argv += ["--loadgen-backend", config.target.backend]
    if simulated:
        argv += ["--loadgen-simulated"]
    if config.scenario_name:
        argv += ["--loadgen-scenario-name", config.scenario_name]
    return argv


def _run_locust(config: RunConfig, lc: LocustConfig, url: str, model: str | None, max_context: int,
                endpoint: str, simulated: bool, run_dir: Path | None) -> int:
    """Run Locust (and local workers) against `url`; returns Locust's exit code."""
    base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE),
            *locustfile_argv(config, url, model, max_context, endpoint, simulated)]
    timeout = config.load.timeout
    # the API key reaches Locust's processes through their environment, never their argv (`ps` shows argv)
    env = {**os.environ, "OPENAI_API_KEY": config.target.api_key} if config.target.api_key else None
    # Users finish the request in flight when the test stops, as `loadgen run --duration` does; a master waits for
    # its workers to say they stopped (the locustfile's stop handshake), and each worker lets its users finish.
    base += ["--stop-timeout", f"{timeout:g}"]
    procs: list[subprocess.Popen] = []
    try:
        if lc.worker:
            return _wait(subprocess.Popen(env=env, args=base + ["--worker", "--master-host", lc.master_host,
                                                  "--master-port", str(lc.master_port)]), procs)
        cmd = base + ["--loadgen-run-dir", str(run_dir), "--csv", str(run_dir / "locust"),
                      "--web-host", lc.web_host, "--web-port", str(lc.web_port)]
        users = config.load.concurrency
        spawn_rate = f"{lc.spawn_rate:g}" if lc.spawn_rate else str(users)
        if lc.headless:
            # loadgen's duration forms (500ms, 1.5m) in whole seconds, which Locust's --run-time reads
            run_time = str(max(1, round(config.load.duration)))
            cmd += ["--headless", "--users", str(users), "--run-time", run_time, "--spawn-rate", spawn_rate]
        elif users:
            cmd += ["--users", str(users), "--spawn-rate", spawn_rate]
        if lc.master or lc.workers:
            # Locust's own default is every interface ("*"): the bind address is the user's choice, 127.0.0.1 unless told
            cmd += ["--master", "--master-bind-host", lc.master_bind_host, "--master-bind-port", str(lc.master_port)]
            if lc.workers:
                cmd += ["--expect-workers", str(lc.workers)]
        master = subprocess.Popen(env=env, args=cmd)
        procs.append(master)
        time.sleep(1.0)
        for _ in range(lc.workers):
            procs.append(subprocess.Popen(env=env, args=base + ["--worker", "--master-host", "127.0.0.1",
                                                  "--master-port", str(lc.master_port)]))
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
