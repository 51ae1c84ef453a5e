"""`loadgen`: command-line entry point. User mistakes print one line naming the fix and exit 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from backends import eventloop
from backends.errors import BackendError
from backends.sim import command as sim_backend
from loadgen.compare import check_comparable, comparison_rows, format_rows, load_run
from loadgen.errors import LoadgenError
from loadgen.execute import record_failed_start, run_point
from loadgen.launch import backend_name, open_endpoint, sim_config
from loadgen.options import (
    DEFAULTS,
    add_run_arguments,
    build_workload,
    check_workload_options,
    duration,
    load_plan,
    nonneg_int,
    positive_float,
    resolve,
)
from loadgen.pace import RATE_TOLERANCE, judge
from loadgen.prompts import HFTokenizer
from loadgen.report import format_summary
from loadgen.rundir import TOOL_VERSION, create_run_dir, slug, write_json
from loadgen.slo import parse_slo
from loadgen.sweep import (
    PointSize,
    find_max_rate,
    point_size,
    progress_line,
    saturation,
    saturation_text,
    sending_seconds,
    sweep_table,
)
from scenarios.catalog import CatalogError, get_model, list_gpus, list_models
from scenarios.scenario import list_scenarios, load_scenario

USER_ERRORS = (LoadgenError, CatalogError, BackendError)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> Parser:
    parser = Parser(prog="loadgen", description="Load-test LLM serving: TTFT, TPOT, ITL, E2EL, throughput, goodput.")
    parser.add_argument("--version", action="version", version=f"loadgen (dissect) {TOOL_VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    run = sub.add_parser("run", help="run a load test (default: against the embedded simulated engine)",
                         description="Run a load test and write a run directory with run.json, requests.jsonl, summary.json.")
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)

    sweep = sub.add_parser("sweep", help="run load points one after another against one server",
                           description="Sweep --qps or --concurrency points (each its own run directory) against one "
                                       "server launched once, or find the highest QPS meeting an SLO (--until-slo).")
    add_run_arguments(sweep, sweep=True)
    s = sweep.add_argument_group("search")
    s.add_argument("--until-slo", help="find the highest QPS meeting this SLO, e.g. ttft:1s or ttft:1s,tpot:100ms")
    s.add_argument("--slo-fraction", type=positive_float, default=0.9,
                   help="a point meets the SLO when this fraction of requests meet it (default 0.9)")
    s.add_argument("--start-qps", type=positive_float, default=1.0, help="first QPS the search tries (default 1)")
    s.add_argument("--max-qps", type=positive_float, default=1024.0, help="highest QPS the search tries (default 1024)")
    s.add_argument("--precision", type=positive_float, default=0.05,
                   help="stop when the bracket is narrower than this, relative (default 0.05)")
    s.add_argument("--rate-tolerance", type=positive_float, default=RATE_TOLERANCE,
                   help="a point meets the SLO only if the server kept up: completed at least 1 minus this of the "
                        f"rate at which requests arrived, its queue not growing (default {RATE_TOLERANCE:g})")
    sweep.set_defaults(func=cmd_sweep)

    rep = sub.add_parser("report", help="write report.html (and plots) for a run or sweep directory",
                         description="Write a self-contained report.html with plots into a run or sweep directory.")
    rep.add_argument("directory", help="a directory written by `loadgen run` or `loadgen sweep`")
    rep.add_argument("--csv", action="store_true", help="also write requests.csv and summary.csv (runs)")
    rep.set_defaults(func=cmd_report)

    cmp_ = sub.add_parser("compare", help="compare runs side by side",
                          description="Aligned summary table with relative differences against the first run, "
                                      "and overlaid distributions with --output FILE.html.")
    cmp_.add_argument("runs", nargs="+", help="two or more run directories")
    add_output(cmp_, "also write an HTML comparison with overlaid CDFs to this file", hidden=("--html",))
    cmp_.add_argument("--force", action="store_true", help="compare even though the workloads differ")
    cmp_.add_argument("--json", action="store_true", help="print the comparison as JSON")
    cmp_.set_defaults(func=cmd_compare)

    loc = sub.add_parser("locust", help="run Locust with LLM metrics (web UI, headless, master/worker)",
                         description="Locust with loadgen's LLM user: TTFT, TPOT, ITL and E2E as Locust entries, and "
                                     "the same run directory as `loadgen run`.")
    from loadgen.locust_cli import add_locust_arguments, cmd_locust

    add_locust_arguments(loc)
    loc.set_defaults(func=cmd_locust)

    gs = sub.add_parser("gpu-sample", help="sample this machine's GPUs with NVML for a while (checks telemetry works)",
                        description="Sample utilisation, memory, power and clocks of every GPU into a JSONL file and "
                                    "print per-GPU averages and energy.")
    gs.add_argument("--duration", type=duration, default=10.0, help="how long to sample (default 10s)")
    # the name `loadgen run` uses; `--interval` stays as a hidden alias for a release
    gs.add_argument("--gpu-sample-interval", dest="interval", type=duration, default=0.2, metavar="DURATION",
                    help="sampling period (default 200ms)")
    gs.add_argument("--interval", dest="interval", type=duration, help=argparse.SUPPRESS)
    add_output(gs, "output JSONL file (default gpu.jsonl)", default="gpu.jsonl")
    gs.set_defaults(func=cmd_gpu_sample)

    scen = sub.add_parser("scenarios", help="list the scenario files, or show one",
                          description="List the shipped scenarios with descriptions, or print one (`show NAME`).")
    scen.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    scen.add_argument("name", nargs="?", help="scenario name or file, for show")
    scen.set_defaults(func=cmd_scenarios)

    serve = sub.add_parser("serve-sim", help="run the simulated engine as a standalone OpenAI-compatible server",
                           description="Serve the simulated engine (SIMULATED timings) until Ctrl-C.")
    sim_backend.add_sim_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=nonneg_int, default=8000, help="port (default 8000; 0 = any free port)")
    serve.set_defaults(func=cmd_serve_sim)

    cat = sub.add_parser("catalog", help="list the catalog's models and GPUs",
                         description="List the catalog's models (architecture, parameters) and GPUs (datasheet "
                                     "peaks, memory, interconnect), from scenarios/catalog/*.yaml.")
    cat.set_defaults(func=cmd_catalog)

    mm = sub.add_parser("make-model", help="write a serving-ready model directory for a catalog model (no download)",
                        description="Write config.json with the catalog model's real architecture, a tokenizer "
                                    "trained here with its real vocabulary size and, with --weights random, random "
                                    "bf16 safetensors. Without weights, vLLM is started with --load-format dummy.")
    mm.add_argument("--model", required=True, help="catalog model (see `loadgen catalog`), e.g. 7b, 70b, tiny")
    add_output(mm, "directory to write (must be empty unless --force)", required=True)
    mm.add_argument("--weights", choices=["none", "random"], default="none",
                    help="none (default): the engine initialises weights; random: write bf16 safetensors "
                         "(built on the GPU when there is one; needs torch)")
    mm.add_argument("--force", action="store_true", help="write into a non-empty directory")
    mm.set_defaults(func=cmd_make_model)

    ew = sub.add_parser("engine-wheels", help="download an engine's wheels for an offline machine",
                        description="Resolve an engine (e.g. vllm==0.22.0) for the target's Python and platform, "
                                    "leave out what the target already has (--have: its `pip freeze`), and download "
                                    "the rest into one folder. On the target: pip install --no-index --no-deps "
                                    "--target SITE DIR/*.whl, then loadgen run ... --engine-path SITE.")
    ew.add_argument("requirements", nargs="+",
                    help="what to install: package specs (vllm==0.22.0), local .whl files, or source directories "
                         "(built into a wheel here); a == pin to another version than --have's is carried anyway")
    add_output(ew, "folder for the wheels", required=True)
    ew.add_argument("--python", default="3.12", help="the target's Python, MAJOR.MINOR (default 3.12)")
    ew.add_argument("--platform", action="append", help="wheel platform tag (repeatable; default "
                                                        "manylinux_2_35_x86_64 and every older manylinux)")
    ew.add_argument("--exclude", action="append", default=[], metavar="NAME",
                    help="leave this package out even if the engine pulls it in (repeatable), e.g. optional kernels")
    ew.add_argument("--have", help="the target's `pip freeze` output: those packages are pinned, not downloaded")
    ew.set_defaults(func=cmd_engine_wheels)
    return parser


def add_output(p: argparse.ArgumentParser, help: str, required: bool = False, default: str | None = None,
               hidden: tuple[str, ...] = ("--out",)) -> None:
    """`--output` wherever results are written; the old spellings stay as hidden aliases for a release. Required is
    checked after parsing (argparse would demand `--output` itself even when an alias was given)."""
    p.add_argument("--output", default=default, help=help)
    for alias in hidden:
        p.add_argument(alias, dest="output", help=argparse.SUPPRESS)
    if required:
        p.set_defaults(output_required=True)


# -- shared preparation -----------------------------------------------------------------------------
def _prepare(args: argparse.Namespace):
    """Resolve options and check every user input before anything is created or started."""
    scenario = load_scenario(args.scenario) if args.scenario else None
    opts = resolve(args, scenario)
    check_workload_options(opts)
    if getattr(opts, "report", None):  # before the run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise LoadgenError("--report needs matplotlib: pip install -e '.[report]' (or pip install matplotlib), "
                               "or drop --report and run `loadgen report DIR` later") from None
    backend = backend_name(opts)
    config = sim_config(opts) if backend == "sim" else None
    tokenizer = HFTokenizer(opts.tokenizer) if opts.tokenizer else None
    api_key = opts.api_key or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    model_label = config.model.name if config else (opts.model or "server")
    return opts, backend, config, tokenizer, headers, model_label


def _print_result(opts: argparse.Namespace, summary: dict, text: str, run_dir: Path) -> None:
    if opts.json:
        print(json.dumps(summary, indent=2))
        if not opts.quiet:
            print(text, file=sys.stderr)
    elif not opts.quiet:
        print(text)
    else:
        print(run_dir)


# -- run ----------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    opts, backend, config, tokenizer, headers, model_label = _prepare(args)
    plan = load_plan(opts)
    if opts.dry_run:
        return _dry_run(opts, backend, config)
    run_dir = create_run_dir(opts.output, backend, model_label)

    async def go():
        async with open_endpoint(opts, config, run_dir, headers) as endpoint:
            workload = build_workload(opts, endpoint.max_context, tokenizer)
            return await run_point(endpoint, opts, plan, workload, run_dir, headers,
                                   tokenizer.count if tokenizer else None)

    try:
        summary, interrupted = eventloop.run(go())
    except USER_ERRORS as exc:
        record_failed_start(run_dir, opts, exc)
        raise
    _print_result(opts, summary, format_summary(summary, run_dir), run_dir)
    if opts.report:
        from loadgen.html_report import write_report

        print(f"report: {write_report(run_dir)}", file=sys.stderr)
    if summary.get("stopped_early"):
        print(f"loadgen: run stopped early: {summary['stopped_early']}; what was measured is in {run_dir}",
              file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def _dry_run(opts: argparse.Namespace, backend: str, config) -> int:
    import shlex

    from backends.registry import FRAMEWORKS
    from loadgen.launch import endpoint_name, launch_spec

    if backend in FRAMEWORKS:
        if opts.url:
            print(f"# attach to {opts.url}: nothing would be launched")
            return 0
        spec = launch_spec(opts, backend, opts.port or 8000)
        endpoint_name(opts, backend, spec)
        for key, value in spec.env.items():
            print(f"export {key}={shlex.quote(value)}")
        print(shlex.join(spec.argv))
        print(f"# ready when GET {spec.url}{spec.ready_path} answers 200; metrics: "
              f"{spec.metrics_path or 'none'}; endpoint: {opts.endpoint or spec.default_endpoint}; weights: {spec.weights}")
        return 0
    if config is not None:
        print(shlex.join(sim_backend.launch_argv(config.model.name, config.gpu.key, config.tp, "127.0.0.1",
                                                 opts.port or 8000, config.profile.path if config.profile else None)))
        return 0
    print(f"# attach to {opts.url}: nothing would be launched")
    return 0


# -- sweep --------------------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    scenario_points = {}
    if args.scenario:
        scenario_points = load_scenario(args.scenario).section("load_points")
    qps_points, conc_points = args.qps, args.concurrency
    # A point list is handled here; resolve() must not see it as a single qps/concurrency.
    args.qps = args.concurrency = None
    opts, backend, config, tokenizer, headers, model_label = _prepare(args)
    if args.until_slo:
        if qps_points or conc_points:
            raise LoadgenError("--until-slo searches QPS itself; drop --qps/--concurrency points")
        opts.slo = args.until_slo
        parse_slo(opts.slo)
        if not 0 < args.slo_fraction <= 1:
            raise LoadgenError("--slo-fraction must be in (0, 1], e.g. 0.9")
    elif qps_points and conc_points:
        raise LoadgenError("sweep --qps points or --concurrency points, not both")
    elif not qps_points and not conc_points:
        qps_points = scenario_points.get("qps")
        conc_points = scenario_points.get("concurrency")
        if not qps_points and not conc_points:
            raise LoadgenError("give points to sweep: --qps 1,2,4,8 or --concurrency 1,4,16,64, or --until-slo ttft:1s")
    if opts.arrival == "trace":
        raise LoadgenError("a sweep varies QPS or concurrency; --arrival trace replays fixed times (use loadgen run)")
    if not 0 < args.rate_tolerance < 1:
        raise LoadgenError("--rate-tolerance must be in (0, 1), e.g. 0.05")
    # Points are sized by time unless the command line or the scenario sized them.
    given = {k: getattr(opts, k) if getattr(args, k) is not None or getattr(opts, k) != DEFAULTS[k][0] else None
             for k in ("num_requests", "duration", "warmup")}
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = create_run_dir(opts.output or f"results/{stamp}-sweep-{slug(backend)}-{slug(Path(model_label).name)}",
                          backend, model_label)
    points: list[dict] = []
    criteria = {"slo_fraction": args.slo_fraction, "rate_tolerance": args.rate_tolerance}

    async def go() -> dict | None:
        async with open_endpoint(opts, config, base, headers) as endpoint:
            batch = (endpoint.info.get("sim") or {}).get("max_num_seqs")

            listed = [(float(q), None) for q in qps_points or []] + [(None, int(c)) for c in conc_points or []]

            def size_of(qps: float | None, concurrency: int | None) -> PointSize:
                return point_size(qps, concurrency, given["num_requests"], given["duration"], given["warmup"], batch)

            async def point(qps: float | None = None, concurrency: int | None = None) -> dict:
                label = f"qps {qps:g}" if qps is not None else f"concurrency {concurrency}"
                size = size_of(qps, concurrency)
                if not opts.quiet:
                    index = len(points) + 1
                    later = None
                    if not args.until_slo:
                        rest = [sending_seconds(size_of(q, c), q) for q, c in listed[index:]]
                        later = None if None in rest else sum(rest)
                    print(progress_line(index, None if args.until_slo else len(listed), label,
                                        sending_seconds(size, qps), later), file=sys.stderr)
                run_dir = base / (f"qps-{qps:g}" if qps is not None else f"concurrency-{concurrency}")
                run_dir.mkdir(exist_ok=True)
                if size.warning:
                    print(f"warning: {size.warning}", file=sys.stderr)
                sized = argparse.Namespace(**{**vars(opts), "num_requests": size.num_requests,
                                              "duration": size.duration_s, "warmup": size.warmup})
                workload = build_workload(opts, endpoint.max_context, tokenizer)  # same seeded requests each point
                summary, interrupted = await run_point(endpoint, opts, load_plan(sized, qps, concurrency), workload,
                                                       run_dir, headers, tokenizer.count if tokenizer else None,
                                                       label=label)
                verdict = judge(summary, args.slo_fraction, args.rate_tolerance)
                entry = {"label": label, "qps": qps, "concurrency": concurrency, "run_dir": str(run_dir),
                         "summary": summary, "verdict": verdict.to_json()}
                points.append(entry)
                write_json(base / "sweep.json", _sweep_json(opts, endpoint.simulated, points, None, criteria))
                if not opts.quiet:
                    print(f"{label}: " + ("meets" if verdict.meets else "fails: " + "; ".join(verdict.reasons)),
                          file=sys.stderr)
                if interrupted:
                    raise KeyboardInterrupt
                return entry

            if args.until_slo:
                found: dict[float, dict] = {}

                async def evaluate(rate: float) -> bool:
                    found[rate] = await point(qps=rate)
                    return found[rate]["verdict"]["meets"]

                search = await find_max_rate(evaluate, args.start_qps, args.max_qps, args.precision)
                search.update(slo=args.until_slo, **criteria)
                search.update(saturation(search, found))
                write_json(base / "sweep.json", _sweep_json(opts, endpoint.simulated, points, search, criteria))
                return search
            for q, c in listed:
                await point(qps=q, concurrency=c)
            return None

    try:
        search = eventloop.run(go())
    except USER_ERRORS as exc:
        record_failed_start(base, opts, exc)
        raise
    except KeyboardInterrupt:
        print(f"sweep interrupted after {len(points)} point(s); results in {base}", file=sys.stderr)
        return 130
    simulated = bool(json.loads((base / "sweep.json").read_text()).get("simulated")) if points else config is not None
    text = sweep_table(sorted(points, key=lambda p: (p["qps"] or 0, p["concurrency"] or 0)), simulated,
                       args.slo_fraction, args.rate_tolerance)
    if search is not None:
        text += "\n\n" + saturation_text(search, args.until_slo, args.slo_fraction, args.rate_tolerance)
    text += f"\nresults: {base}"
    result = json.loads((base / "sweep.json").read_text())
    _print_result(opts, result, text, base)
    if opts.report:
        from loadgen.html_report import write_report

        print(f"report: {write_report(base)}", file=sys.stderr)
    return 0


def _sweep_json(opts: argparse.Namespace, simulated: bool, points: list[dict], search: dict | None,
                criteria: dict) -> dict:
    keep = ("requests", "throughput", "ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "goodput", "lateness_ms", "pace")
    return {
        "simulated": simulated,
        "scenario": opts.scenario_name,
        **criteria,
        "points": [{k: v for k, v in p.items() if k != "summary"} | {k: p["summary"].get(k) for k in keep}
                   for p in points],
        "search": search,
    }


# -- reports ------------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from loadgen.csv_export import write_requests_csv, write_summary_csv
    from loadgen.html_report import write_report

    path = Path(args.directory)
    if not path.is_dir():
        raise LoadgenError(f"{path} is not a directory; give a run or sweep directory")
    out = write_report(path)
    if args.csv and (path / "summary.json").exists():
        data = load_run(path)
        write_requests_csv(path / "requests.csv", data.records())
        write_summary_csv(path / "summary.csv", data.summary)
    print(out)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    if len(args.runs) < 2:
        raise LoadgenError("compare needs at least two run directories")
    runs = [load_run(p) for p in args.runs]
    diffs = check_comparable(runs, args.force)
    rows = comparison_rows(runs)
    if args.json:
        print(json.dumps({"runs": [str(r.path) for r in runs], "differences": diffs, "rows": rows}, indent=2))
    else:
        if any(r.simulated for r in runs):
            print("SIMULATED: at least one run's timings come from dissect's engine model.")
        for d in diffs:
            print(f"forced comparison: {d}")
        print(tabulate(format_rows(runs, rows), headers=["metric", *(r.name for r in runs)],
                       disable_numparse=True))
    if args.output:
        from loadgen.html_report import compare_report

        Path(args.output).write_text(compare_report(runs, diffs), encoding="utf-8")
        print(f"report: {args.output}", file=sys.stderr)
    return 0


def cmd_gpu_sample(args: argparse.Namespace) -> int:
    import time

    from tabulate import tabulate

    from loadgen.telemetry import GPUSampler, nvml_unavailable_reason, read_gpu_samples
    from loadgen.timeseries import energy_joules

    reason = nvml_unavailable_reason()
    if reason:
        raise LoadgenError(f"cannot sample GPUs: {reason}")
    out = Path(args.output)
    if out.exists():
        raise LoadgenError(f"{out} exists; choose another --out")
    sampler = GPUSampler(out, args.interval)
    sampler.start()
    time.sleep(args.duration)
    sampler.stop()
    if sampler.error:
        raise LoadgenError(f"GPU sampling failed: {sampler.error}")
    samples = read_gpu_samples(out)
    rows = []
    for gpu in sorted({s["gpu"] for s in samples}):
        mine = [s for s in samples if s["gpu"] == gpu]
        energy = energy_joules([(s["t_s"], s["power_w"]) for s in mine])
        rows.append([gpu, mine[0]["name"], len(mine), f"{sum(s['util_pct'] for s in mine) / len(mine):.0f}",
                     f"{max(s['power_w'] for s in mine):.0f}", f"{energy:.0f}",
                     f"{max(s['mem_used_mib'] for s in mine):,.0f}", f"{max(s['sm_clock_mhz'] for s in mine)}"])
    print(tabulate(rows, headers=["gpu", "name", "samples", "mean util %", "max W", "energy J", "max MiB", "max SM MHz"]))
    print(out)
    return 0


# -- other commands -----------------------------------------------------------------------------------
def cmd_scenarios(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    if args.action == "show":
        if not args.name:
            raise LoadgenError("`loadgen scenarios show` needs a NAME (see `loadgen scenarios`)")
        print(load_scenario(args.name).path.read_text(), end="")
        return 0
    rows = [[s.name, s.data.get("model", "-"), s.description] for s in list_scenarios()]
    print(tabulate(rows, headers=["scenario", "model", "description"], maxcolwidths=[None, None, 90]))
    return 0


def cmd_serve_sim(args: argparse.Namespace) -> int:
    config = sim_backend.build_config(
        args.model, args.gpu, args.gpus, served_model_name=args.served_model_name,
        max_num_seqs=args.max_num_seqs, max_batched_tokens=args.max_batched_tokens,
        gpu_memory_utilization=args.gpu_memory_utilization, profile=args.profile,
        fixed_ttft_s=args.fixed_ttft, fixed_itl_s=args.fixed_itl,
    )
    try:
        sim_backend.serve(config, args.host, args.port)
    except OSError as exc:
        raise LoadgenError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; choose another --port") from None
    return 0


def param_size(n: int) -> str:
    """7.00B, 1.2M, 40.5K: a tiny model is not `0.00B`."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f}{suffix}" if suffix == "B" else f"{n / scale:.1f}{suffix}"
    return str(n)


def cmd_catalog(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = [[m.name, ",".join(m.aliases), param_size(m.param_count), m.num_layers, m.hidden_size,
             f"{m.num_heads}/{m.num_kv_heads}", m.vocab_size, m.max_context, m.hf_id or "-"] for m in list_models()]
    print(tabulate(rows, headers=["model", "aliases", "params", "layers", "hidden", "heads/kv", "vocab", "context", "HF id"]))
    print()
    rows = [[g.key, ",".join(g.aliases), g.name, g.peak_bf16_tflops, g.hbm_bandwidth_gbs, g.memory_gib,
             g.interconnect_gbs] for g in list_gpus()]
    print(tabulate(rows, headers=["gpu", "aliases", "name", "bf16 TFLOP/s", "HBM GB/s", "GiB", "link GB/s/dir"]))
    return 0


def cmd_make_model(args: argparse.Namespace) -> int:
    from backends.model_dir import write_model_dir

    spec = get_model(args.model)
    result = write_model_dir(spec, Path(args.output), args.weights, args.force,
                             progress=lambda message: print(f"make-model: {message} ...", file=sys.stderr, flush=True))
    weights = ", ".join(result.weight_files) if result.weight_files else "none (engines initialise them)"
    print(f"{result.path}: {spec.name} ({param_size(spec.param_count)} parameters, {spec.num_layers} layers), "
          f"tokenizer {result.vocab_size} ids ({result.trained_tokens} learned), weights: {weights}")
    return 0


def cmd_engine_wheels(args: argparse.Namespace) -> int:
    from backends.engine_wheels import DEFAULT_PLATFORMS, download_engine, read_have

    have = read_have(Path(args.have)) if args.have else {}
    result = download_engine(args.requirements, Path(args.output), args.python,
                             tuple(args.platform) if args.platform else DEFAULT_PLATFORMS, have, tuple(args.exclude),
                             progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"{len(result.wheels)} wheels, {result.total_bytes / 1e6:.1f} MB in {result.out}; "
          f"{len(result.skipped)} resolved packages left out because the target has them")
    if result.conflict:
        print(f"warning: the target's packages conflict with the engine's pins ({result.conflict}); kept the "
              f"target's versions ({result.differing} differ from a fresh resolution)")
    if result.excluded:
        print(f"left out on request: {', '.join(result.excluded)}")
    if result.local:
        print(f"local (built or copied, not downloaded): {', '.join(result.local)}")
    if result.replaced:
        print(f"carried although the target has another version: {', '.join(result.replaced)} (they shadow the "
              "target's copies on the engine's PYTHONPATH)")
    print(f"on the target: pip install --no-index --no-deps --target SITE {result.out}/*.whl")
    print("then: loadgen run --backend ... --engine-path SITE")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "output_required", False) and not args.output:
        parser.exit(2, f"loadgen {args.command}: error: --output DIR is required (see 'loadgen {args.command} --help')\n")
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
