"""`loadgen`: command-line entry point. User mistakes print one line naming the fix and exit 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

import aiohttp

from backends import eventloop
from backends import sim as sim_backend
from backends.errors import BackendError
from backends.openai_protocol import ENDPOINT_PATHS, OpenAIProtocol
from backends.process import ServerProcess, find_free_port
from loadgen.accuracy import timing_error
from loadgen.arrivals import ARRIVAL_KINDS, ArrivalProcess
from loadgen.client import Target
from loadgen.distributions import LengthDistribution
from loadgen.errors import LoadgenError
from loadgen.metrics import summarize
from loadgen.prompts import HFTokenizer, PromptSynthesizer
from loadgen.records import RecordWriter
from loadgen.report import format_summary
from loadgen.rundir import create_run_dir, environment, utc_now, write_json
from loadgen.runner import LoadPlan, run_load
from loadgen.slo import parse_slo
from loadgen.units import parse_duration
from loadgen.workload import Workload
from scenarios.catalog import CatalogError, get_gpu, get_model, list_gpus, list_models

DEFAULT_QPS = 10.0
DEFAULT_NUM_REQUESTS = 100
USER_ERRORS = (LoadgenError, CatalogError, BackendError)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(kind: type, low: float, inclusive: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {what}") from None
        if value < low or (not inclusive and value == low) or value != value:
            bound = f">= {low:g}" if inclusive else f"> {low:g}"
            raise argparse.ArgumentTypeError(f"{text!r} must be {bound}")
        return value

    return parse


positive_float = _number(float, 0, False, "number")
positive_int = _number(int, 0, False, "integer")
nonneg_int = _number(int, 0, True, "integer")


def _duration(text: str) -> float:
    try:
        value = parse_duration(text)
    except LoadgenError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive duration")
    return value


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target")
    t.add_argument("--backend", default=None, choices=["sim", "openai"],
                   help="sim: start the embedded simulated engine (default without --url); "
                        "openai: any OpenAI-compatible server at --url")
    t.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8000 (launches nothing)")
    t.add_argument("--model", default=None,
                   help="catalog model (7b, 13b, 70b, 8b, llama-3-70b, tiny) for the sim; with --url, the model "
                        "id to request (default: the first the server lists)")
    t.add_argument("--gpu", default="h100", help="sim only: catalog GPU (a800, a100-80g, h100, h200, rtx4090, rtx3090)")
    t.add_argument("--gpus", type=positive_int, default=1, help="sim only: GPUs, used as tensor parallelism (default 1)")
    t.add_argument("--endpoint", choices=sorted(ENDPOINT_PATHS), default="completions",
                   help="OpenAI API: completions (/v1/completions) or chat (/v1/chat/completions)")
    t.add_argument("--api-key", default=None,
                   help="bearer token for the server (default: $OPENAI_API_KEY); never written to disk")
    t.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="let the server stop at EOS instead of forcing exactly --output-len tokens")
    t.add_argument("--startup-timeout", type=_duration, default=120.0,
                   help="sim only: seconds to wait for the engine to be ready (default 120s)")

    w = p.add_argument_group("workload")
    w.add_argument("--input-len", default="512",
                   help="prompt tokens: N, fixed:N, uniform:MIN,MAX, normal:MEAN,STD, lognormal:MEAN,SIGMA (default 512)")
    w.add_argument("--output-len", default="128", help="output tokens, same forms as --input-len (default 128)")
    w.add_argument("--max-context", type=positive_int, default=None,
                   help="clip input+output to this many tokens (default: the model's context length)")
    w.add_argument("--tokenizer", default=None,
                   help="tokenizer.json or a tokenizer directory for exact prompt lengths "
                        "(default: one common word per token, an approximation)")
    w.add_argument("--seed", type=int, default=0, help="seed for lengths, prompts and arrivals (default 0)")

    a = p.add_argument_group("load")
    a.add_argument("--qps", type=positive_float, default=None,
                   help=f"open loop: requests per second (default {DEFAULT_QPS:g} when --concurrency is not given)")
    a.add_argument("--arrival", choices=ARRIVAL_KINDS, default="poisson",
                   help="open-loop inter-arrival process (default poisson)")
    a.add_argument("--burstiness", type=positive_float, default=1.0,
                   help="gamma shape: 1 = Poisson, <1 burstier, >1 smoother (CV = 1/sqrt(burstiness))")
    a.add_argument("--concurrency", type=positive_int, default=None, help="closed loop: N users, each sends when its last finished")
    a.add_argument("--num-requests", type=positive_int, default=None,
                   help=f"measured requests (default {DEFAULT_NUM_REQUESTS} unless --duration is given)")
    a.add_argument("--duration", type=_duration, default=None, help="stop sending after this long, e.g. 60s or 5m")
    a.add_argument("--warmup", type=nonneg_int, default=0, help="requests sent first and excluded from the metrics (default 0)")
    a.add_argument("--timeout", type=_duration, default=600.0, help="per-request limit, e.g. 30s (default 600s)")
    a.add_argument("--slo", default=None, help="goodput objectives, e.g. ttft:500ms,tpot:50ms,e2el:10s")

    o = p.add_argument_group("output")
    o.add_argument("--output", default=None, help="run directory (default results/<time>-<backend>-<model>)")
    o.add_argument("--json", action="store_true", help="print summary.json to stdout (the table goes to stderr)")
    o.add_argument("--quiet", action="store_true", help="no progress bar and no table")


def build_parser() -> Parser:
    parser = Parser(prog="loadgen", description="Load-test LLM serving: TTFT, TPOT, ITL, E2EL, throughput, goodput.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    run = sub.add_parser("run", help="run a load test (default: against the embedded simulated engine)",
                         description="Run a load test and write a run directory with run.json, requests.jsonl, summary.json.")
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)
    serve = sub.add_parser("serve-sim", help="run the simulated engine as a standalone OpenAI-compatible server",
                           description="Serve the simulated engine (SIMULATED timings) until Ctrl-C.")
    sim_backend.add_sim_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=nonneg_int, default=8000, help="port (default 8000; 0 = any free port)")
    serve.set_defaults(func=cmd_serve_sim)
    cat = sub.add_parser("catalog", help="list the catalog's models and GPUs")
    cat.set_defaults(func=cmd_catalog)
    return parser


# -- run ------------------------------------------------------------------------------------------
def _load_plan(args: argparse.Namespace) -> LoadPlan:
    if args.qps is not None and args.concurrency is not None:
        raise LoadgenError("--qps (open loop) and --concurrency (closed loop) exclude each other; give one")
    if args.burstiness != 1.0 and args.arrival != "gamma":
        raise LoadgenError("--burstiness applies to --arrival gamma only; add --arrival gamma or drop it")
    num = args.num_requests
    if num is None and args.duration is None:
        num = DEFAULT_NUM_REQUESTS
    arrival = None
    if args.concurrency is None:
        arrival = ArrivalProcess(args.arrival, args.qps if args.qps is not None else DEFAULT_QPS, args.burstiness)
    return LoadPlan(arrival=arrival, concurrency=args.concurrency, num_requests=num, duration_s=args.duration,
                    warmup=args.warmup, timeout_s=args.timeout, seed=args.seed)


def _check_url(url: str) -> str:
    if not (url.startswith("http://") or url.startswith("https://")):
        raise LoadgenError(f"--url {url!r} needs a scheme: write http://{url} (or https://)")
    return url.rstrip("/")


async def _probe_server(url: str, headers: dict[str, str]) -> dict | None:
    """GET /v1/models: proves the server is reachable and tells the model id and context when it can."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            async with s.get(url + "/v1/models", headers=headers) as resp:
                if resp.status == 200:
                    return await resp.json(content_type=None)
                return None
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise LoadgenError(f"cannot reach {url}: {exc.__class__.__name__}: {exc}; check --url and that the server is up") from None


def cmd_run(args: argparse.Namespace) -> int:
    plan = _load_plan(args)
    slo = parse_slo(args.slo) if args.slo else None
    input_len = LengthDistribution.parse(args.input_len, "--input-len")
    output_len = LengthDistribution.parse(args.output_len, "--output-len")
    if args.url and args.backend == "sim":
        raise LoadgenError("--backend sim starts its own server; drop --url, or use --backend openai with --url")
    backend = "openai" if args.url else (args.backend or "sim")
    if backend == "openai" and not args.url:
        raise LoadgenError("--backend openai needs --url of a running server, e.g. --url http://127.0.0.1:8000")
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    sim_config = None
    if backend == "sim":
        sim_config = sim_backend.build_config(args.model or "7b", args.gpu, args.gpus)
        model_name = sim_config.model.name
        max_context = sim_config.model.max_context
    else:
        url = _check_url(args.url)
        model_name = args.model
        max_context = None
        try:
            max_context = get_model(args.model).max_context if args.model else None
        except CatalogError:
            pass
    tokenizer = HFTokenizer(args.tokenizer) if args.tokenizer else None
    run_dir = create_run_dir(args.output, backend, model_name or "server")
    return eventloop.run(_run(args, plan, slo, input_len, output_len, backend, sim_config, model_name,
                            max_context, tokenizer, headers, run_dir))


async def _run(args, plan, slo, input_len, output_len, backend, sim_config, model_name, max_context, tokenizer,
               headers, run_dir: Path) -> int:
    from tqdm import tqdm

    run_info: dict = {"status": "starting", "started_at": utc_now(), "environment": environment()}
    server: ServerProcess | None = None
    writer: RecordWriter | None = None
    progress = None
    try:
        if sim_config is not None:
            port = find_free_port()
            url = f"http://127.0.0.1:{port}"
            argv = sim_backend.launch_argv(sim_config.model.name, sim_config.gpu.key, sim_config.tp, "127.0.0.1", port)
            server = ServerProcess(argv, run_dir / "server.log", url + "/health",
                                   startup_timeout=args.startup_timeout, name="simulated engine")
            server.start()
            await server.wait_ready()
        else:
            url = _check_url(args.url)
        models = await _probe_server(url, headers)
        listed = (models or {}).get("data") or []
        if model_name is None:
            if not listed:
                raise LoadgenError(f"{url}/v1/models lists no model; pass --model with the id the server serves")
            model_name = listed[0]["id"]
        if max_context is None:
            served = next((m for m in listed if m.get("id") == model_name), {})
            max_context = args.max_context or served.get("max_model_len") or 4096
        elif args.max_context:
            max_context = min(args.max_context, max_context)

        workload = Workload(input_len, output_len, max_context, PromptSynthesizer(tokenizer), args.seed)
        protocol = OpenAIProtocol(args.endpoint, args.ignore_eos)
        target = Target(url, model_name, protocol, headers, tokenizer.count if tokenizer else None)
        simulated = sim_config is not None
        backend_info: dict = {"name": backend, "url": url, "simulated": simulated}
        if server is not None:
            backend_info.update(launch_command=server.argv, ready_after_s=server.ready_after_s)
            backend_info["sim"] = await _get_json(url + "/sim/info")
        run_info.update(
            status="running",
            backend=backend_info,
            model=model_name,
            gpu=(sim_config.gpu.key if sim_config else None),
            gpus=(sim_config.tp if sim_config else None),
            endpoint=protocol.endpoint,
            path=protocol.path,
            ignore_eos=protocol.ignore_eos,
            workload=workload.describe(),
            load={
                "mode": plan.mode,
                "arrival": plan.arrival.kind if plan.arrival else None,
                "qps": plan.arrival.rate if plan.arrival else None,
                "burstiness": plan.arrival.burstiness if plan.arrival else None,
                "concurrency": plan.concurrency,
                "num_requests": plan.num_requests,
                "duration_s": plan.duration_s,
                "warmup": plan.warmup,
                "timeout_s": plan.timeout_s,
                "seed": plan.seed,
            },
            slo_ms=slo,
            api_key_given=bool(headers),
        )
        write_json(run_dir / "run.json", run_info)

        total = None if plan.num_requests is None else plan.num_requests + plan.warmup
        progress = tqdm(total=total, unit="req", disable=args.quiet, file=sys.stderr, dynamic_ncols=True,
                        desc=f"{backend} {model_name}" + (" (SIMULATED)" if simulated else ""))
        writer = RecordWriter(run_dir / "requests.jsonl")

        def on_record(record) -> None:
            writer.write(record)
            progress.update(1)

        load_task = asyncio.create_task(run_load(target, workload, plan, on_record))
        _install_stop_handlers(load_task)
        outcome = await load_task
        progress.close()
        run_info.update(origin_perf_counter_ns=outcome.origin_ns, wall_s=outcome.wall_s,
                        workload={**workload.describe(), "clipped_requests": workload.clipped})

        summary = summarize(outcome.records, slo, simulated=simulated)
        summary["prompt_source"] = workload.synthesizer.source
        summary["interrupted"] = outcome.interrupted
        if simulated:
            truth = (await _get_json(url + "/sim/requests"))["requests"]
            with open(run_dir / "sim_ground_truth.jsonl", "w") as f:
                for g in truth:
                    f.write(json.dumps(g) + "\n")
            summary["client_timing_error"] = timing_error(outcome.records, truth, outcome.origin_ns)
        write_json(run_dir / "summary.json", summary)
        run_info.update(status="interrupted" if outcome.interrupted else "finished", finished_at=utc_now())
        write_json(run_dir / "run.json", run_info)
    except BaseException as exc:
        run_info.update(status="failed", finished_at=utc_now(), error=str(exc).splitlines()[0] if str(exc) else repr(exc))
        write_json(run_dir / "run.json", run_info)
        raise
    finally:
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
        if server is not None:
            server.stop()

    table = format_summary(summary, run_dir)
    if args.json:
        print(json.dumps(summary, indent=2))
        if not args.quiet:
            print(table, file=sys.stderr)
    elif not args.quiet:
        print(table)
    else:
        print(run_dir)
    return 130 if outcome.interrupted else 0


async def _get_json(url: str) -> dict:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        async with s.get(url) as resp:
            return await resp.json(content_type=None)


def _install_stop_handlers(load_task: asyncio.Task) -> None:
    """First Ctrl-C/SIGTERM: cancel in-flight requests, keep and summarise what was measured. Second: exit now."""
    loop = asyncio.get_running_loop()
    hits = 0

    def stop() -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            print("\nstopping: cancelling in-flight requests and writing results (Ctrl-C again to force)",
                  file=sys.stderr)
            load_task.cancel()
        else:
            os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


# -- other commands -------------------------------------------------------------------------------
def cmd_serve_sim(args: argparse.Namespace) -> int:
    config = sim_backend.build_config(
        args.model, args.gpu, args.gpus, served_model_name=args.served_model_name,
        max_num_seqs=args.max_num_seqs, max_batched_tokens=args.max_batched_tokens,
        gpu_memory_utilization=args.gpu_memory_utilization,
    )
    try:
        sim_backend.serve(config, args.host, args.port)
    except OSError as exc:
        raise LoadgenError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; choose another --port") from None
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = [[m.name, ",".join(m.aliases), f"{m.param_count / 1e9:.2f}B", m.num_layers, m.hidden_size,
             f"{m.num_heads}/{m.num_kv_heads}", m.vocab_size, m.max_context, m.hf_id or "-"] for m in list_models()]
    print(tabulate(rows, headers=["model", "aliases", "params", "layers", "hidden", "heads/kv", "vocab", "context", "HF id"]))
    print()
    rows = [[g.key, ",".join(g.aliases), g.name, g.peak_bf16_tflops, g.hbm_bandwidth_gbs, g.memory_gib,
             g.interconnect_gbs] for g in list_gpus()]
    print(tabulate(rows, headers=["gpu", "aliases", "name", "bf16 TFLOP/s", "HBM GB/s", "GiB", "link GB/s/dir"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
