"""The simulated engine as a process: its flags, how loadgen launches it, and the foreground server
(`python -m backends.sim`, `loadgen serve`)."""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import threading
import time
from pathlib import Path

from backends.errors import BackendError
from backends.eventloop import serve_until_stopped
from backends.sim.config import SimConfig, build_config
from backends.sim.server import SimServer
from backends.supervise import die_with_parent, parent_alive
from scenarios.catalog import CatalogError

__all__ = ["add_sim_arguments", "build_config", "launch_argv", "main", "serve"]


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="7b", help="catalog model name or alias (default: 7b)")
    parser.add_argument("--gpu", default="h100", help="catalog GPU name or alias (default: h100)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs = tensor-parallel degree (default: 1)")
    parser.add_argument("--served-model-name", default=None, help="model id the API reports (default: catalog name)")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="max sequences per iteration (default: 256)")
    parser.add_argument("--max-batched-tokens", type=int, default=8192,
                        help="token budget per iteration, prefill chunks included (default: 8192)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                        help="fraction of GPU memory for weights + KV cache (default: 0.9)")
    parser.add_argument("--profile", default=None,
                        help="hardware profile JSON from `python -m training_bench micro profile`: step times from "
                             "measured operators instead of catalog peaks")
    parser.add_argument("--fixed-ttft", type=_seconds, default=None, metavar="DURATION",
                        help="no engine model: first token this long after arrival (e.g. 5ms), per request")
    parser.add_argument("--fixed-itl", type=_seconds, default=None, metavar="DURATION",
                        help="no engine model: one token every DURATION after the first (e.g. 1ms), per request")


def _seconds(text: str) -> float:
    """'5ms', '250us', '0.01s' or bare seconds (backends does not depend on loadgen's unit parser)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration such as 1ms, 250us or 0.01s")
    value = float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0}[m.group(2)]
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def serve(config: SimConfig, host: str, port: int) -> None:
    """Run the sim server in the foreground until SIGINT/SIGTERM; prints one readiness line."""
    server = SimServer(config)
    for warning in config.warnings:
        print(f"sim: warning: {warning}", file=sys.stderr, flush=True)

    def started(bound: int) -> None:
        print(f"dissect sim (SIMULATED {config.model.name} on {config.tp}x {config.gpu.key}) "
              f"listening on http://{host}:{bound}", flush=True)
        gc.collect()
        gc.freeze()  # long-lived server state is never rescanned: no multi-ms collections mid-stream

    serve_until_stopped(server.app, host, port, started)


def _exit_when_orphaned(parent_pid: int) -> None:
    """Launched by loadgen: if loadgen dies without stopping us (SIGKILL), do not linger. The parent's pid comes
    on the command line: by the time our imports are done it may be dead already, and getppid() would then be
    init's. The parent-death signal (SIGTERM, Linux) stops the server cleanly; polling covers macOS."""
    if not die_with_parent(parent_pid):
        os._exit(0)

    def watch() -> None:
        while parent_alive(parent_pid):
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def launch_argv(model: str, gpu: str, gpus: int, host: str, port: int, profile: str | None = None,
                parent_pid: int | None = None) -> list[str]:
    """How loadgen starts the sim: a separate process, so its work never competes with the client's event loop.
    With `parent_pid` the sim exits by itself once that process is gone."""
    extra = ["--profile", str(Path(profile).resolve())] if profile else []
    if parent_pid is not None:
        extra += ["--exit-with-parent", str(parent_pid)]
    return [sys.executable, "-m", "backends.sim", "--model", model, "--gpu", gpu, "--gpus", str(gpus),
            "--host", host, "--port", str(port), *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backends.sim", description="Run the simulated engine server.")
    add_sim_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--exit-with-parent", type=int, default=None, metavar="PID", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.exit_with_parent is not None:
        _exit_when_orphaned(args.exit_with_parent)
    try:
        config = build_config(
            args.model, args.gpu, args.gpus, served_model_name=args.served_model_name,
            max_num_seqs=args.max_num_seqs, max_batched_tokens=args.max_batched_tokens,
            gpu_memory_utilization=args.gpu_memory_utilization, profile=args.profile,
            fixed_ttft_s=args.fixed_ttft, fixed_itl_s=args.fixed_itl,
        )
        serve(config, args.host, args.port)
    except (BackendError, CatalogError) as exc:
        print(f"sim: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sim: error: cannot listen on {args.host}:{args.port}: {exc.strerror}; choose another --port",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
