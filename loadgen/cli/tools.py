"""`loadgen report`, `compare`, `gpu-sample`, `scenarios`, `serve-sim`, `catalog`, `make-model` and
`engine-wheels`: the commands around a run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backends.sim import command as sim_backend
from loadgen.config import kinds, list_scenarios, load_scenario
from loadgen.config.sources import as_type
from loadgen.errors import LoadgenError
from loadgen.outputs.compare import (
    Side,
    check_sides,
    comparison_rows,
    format_headers,
    format_rows,
    load_run,
    method_notes,
    summary_lines,
)
from loadgen.rundir import writable_dir
from loadgen.stats import LEVEL, RESAMPLES, SEED
from scenarios.catalog import get_model, list_gpus, list_models

DURATION = as_type(kinds.duration, "DURATION")
PORT = as_type(kinds.nonneg_int, "PORT")


def add_report_parsers(sub) -> None:
    rep = sub.add_parser("report", help="write report.html (and plots) for a run or sweep directory",
                         description="Write a self-contained report.html with plots into a run or sweep directory.")
    rep.add_argument("directory", help="a directory written by `loadgen run` or `loadgen sweep`")
    rep.add_argument("--csv", action="store_true", help="also write requests.csv and summary.csv (runs)")
    rep.set_defaults(func=cmd_report)

    cmp_ = sub.add_parser("compare", help="compare runs side by side, and say which differences are more than noise",
                          description="Aligned summary table with relative differences against the first run (or "
                                      "group of repeats), a 95% bootstrap interval of each latency difference and "
                                      "whether it is significant or within noise, and overlaid distributions with "
                                      "--output FILE.html.")
    cmp_.add_argument("runs", nargs="*", help="two or more run directories (each one side)")
    cmp_.add_argument("--group", action="append", nargs="+", metavar="RUN", default=[],
                      help="one side made of several runs of one configuration (repeats); give --group once per "
                           "side, e.g. --group a1 a2 a3 --group b1 b2 b3: runs are resampled too, so run-to-run "
                           "variation enters the intervals")
    add_output(cmp_, "also write an HTML comparison with overlaid CDFs to this file", hidden=("--html",))
    cmp_.add_argument("--force", action="store_true", help="compare even though the workloads differ")
    cmp_.add_argument("--json", action="store_true", help="print the comparison as JSON")
    cmp_.set_defaults(func=cmd_compare)


def add_utility_parsers(sub) -> None:
    gs = sub.add_parser("gpu-sample", help="sample this machine's GPUs with NVML for a while (checks telemetry works)",
                        description="Sample utilisation, memory, power and clocks of every GPU into a JSONL file and "
                                    "print per-GPU averages and energy.")
    gs.add_argument("--duration", type=DURATION, default=10.0, help="how long to sample (default 10s)")
    # the name `loadgen run` uses; `--interval` stays as a hidden alias for a release
    gs.add_argument("--gpu-sample-interval", dest="interval", type=DURATION, default=0.2, metavar="DURATION",
                    help="sampling period (default 200ms)")
    gs.add_argument("--interval", dest="interval", type=DURATION, help=argparse.SUPPRESS)
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
    serve.add_argument("--port", type=PORT, default=8000, help="port (default 8000; 0 = any free port)")
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


def add_output(p: argparse.ArgumentParser, help: str, required: bool = False, default: str | None = None,
               hidden: tuple[str, ...] = ("--out",)) -> None:
    """`--output` wherever results are written; the old spellings stay as hidden aliases for a release. Required is
    checked after parsing (argparse would demand `--output` itself even when an alias was given)."""
    p.add_argument("--output", default=default, help=help)
    for alias in hidden:
        p.add_argument(alias, dest="output", help=argparse.SUPPRESS)
    if required:
        p.set_defaults(output_required=True)


# -- reports ------------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from loadgen.outputs.csv_files import write_requests_csv, write_summary_csv
    from loadgen.outputs.html_report import write_report

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

    if args.runs and args.group:
        raise LoadgenError("give either run directories or --group lists (one per side), not both")
    if args.group:
        if len(args.group) < 2:
            raise LoadgenError("compare needs at least two sides: give --group once per side")
        sides = [Side([load_run(p) for p in group]) for group in args.group]
    else:
        if len(args.runs) < 2:
            raise LoadgenError("compare needs at least two run directories")
        sides = [Side([load_run(p)]) for p in args.runs]
    diffs = check_sides(sides, args.force)
    rows = comparison_rows(sides)
    lines, notes = summary_lines(sides, rows), method_notes(sides)
    if args.json:
        print(json.dumps({"runs": [str(r.path) for s in sides for r in s.runs],
                          "sides": [{"name": s.name, "runs": [str(r.path) for r in s.runs]} for s in sides],
                          "differences": diffs, "rows": rows, "verdicts": lines,
                          "test": {"method": "percentile bootstrap", "level": LEVEL, "resamples": RESAMPLES,
                                   "seed": SEED, "notes": notes}}, indent=2))
    else:
        if any(s.simulated for s in sides):
            print("SIMULATED: at least one run's timings come from dissect's engine model.")
        for d in diffs:
            print(f"forced comparison: {d}")
        for s in sides:
            if len(s.runs) > 1:
                print(f"{s.name}: {', '.join(r.name for r in s.runs)}")
        print(tabulate(format_rows(sides, rows), headers=format_headers(sides), disable_numparse=True))
        for line in [*lines, *notes]:
            print(line)
    if args.output:
        from loadgen.outputs.html_report import compare_report

        try:
            Path(args.output).write_text(compare_report(sides, diffs), encoding="utf-8")
        except OSError as exc:
            raise LoadgenError(f"cannot write --output {args.output}: {exc.strerror or exc}; choose another "
                               "file") from None
        print(f"report: {args.output}", file=sys.stderr)
    return 0


def cmd_gpu_sample(args: argparse.Namespace) -> int:
    import time

    from tabulate import tabulate

    from loadgen.outputs.timeseries import energy_joules
    from loadgen.telemetry.gpu import GPUSampler, nvml_unavailable_reason, read_gpu_samples

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
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise LoadgenError(f"--output {args.output} is a file; give a directory for the model")
    writable_dir(Path(args.output).parent if not Path(args.output).exists() else Path(args.output))
    result = write_model_dir(spec, Path(args.output), args.weights, args.force,
                             progress=lambda message: print(f"make-model: {message} ...", file=sys.stderr, flush=True))
    weights = ", ".join(result.weight_files) if result.weight_files else "none (engines initialise them)"
    print(f"{result.path}: {spec.name} ({param_size(spec.param_count)} parameters, {spec.num_layers} layers), "
          f"tokenizer {result.vocab_size} ids ({result.trained_tokens} learned), weights: {weights}")
    return 0


def cmd_engine_wheels(args: argparse.Namespace) -> int:
    from backends.engine_wheels import DEFAULT_PLATFORMS, download_engine, read_have

    if args.have and not Path(args.have).is_file():
        raise LoadgenError(f"--have {args.have} is not a file; give the target's `pip freeze > FILE` output")
    have = read_have(Path(args.have)) if args.have else {}
    writable_dir(Path(args.output))
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


