"""`loadgen run`: one load test, against the embedded sim, a launched framework or a URL."""

from __future__ import annotations

import argparse
import shlex
import sys

from backends import eventloop
from backends.registry import FRAMEWORKS
from backends.sim import command as sim_backend
from loadgen.cli.common import USER_ERRORS, Prepared, prepare, print_result, run_config
from loadgen.config import RUN_SECTIONS, add_arguments
from loadgen.config.assemble import build_workload, load_plan
from loadgen.endpoint import endpoint_name, launch_spec, open_endpoint
from loadgen.outputs.console import format_summary
from loadgen.point import record_failed_start, run_point
from loadgen.rundir import create_run_dir


def add_run_parser(sub) -> None:
    run = sub.add_parser("run", help="run a load test (default: against the embedded simulated engine)",
                         description="Run a load test and write a run directory with run.json, requests.jsonl, "
                                     "summary.json.")
    add_arguments(run, RUN_SECTIONS)
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    prepared = prepare(run_config(args))
    config = prepared.config
    plan = load_plan(config)
    if config.target.dry_run:
        return dry_run(prepared)
    run_dir = create_run_dir(config.output.dir, config.target.backend, prepared.model_label)

    async def go():
        async with open_endpoint(config, prepared.sim, run_dir, prepared.headers) as endpoint:
            workload = build_workload(config, endpoint.max_context, prepared.tokenizer)
            return await run_point(endpoint, config, plan, workload, run_dir, prepared.headers, prepared.count_tokens)

    try:
        summary, interrupted = eventloop.run(go())
    except USER_ERRORS as exc:
        record_failed_start(run_dir, config, exc)
        raise
    print_result(config.output, summary, format_summary(summary, run_dir), run_dir)
    if summary.get("stopped_early"):
        print(f"loadgen: run stopped early: {summary['stopped_early']}; what was measured is in {run_dir}",
              file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def dry_run(prepared: Prepared) -> int:
    target = prepared.config.target
    if target.backend in FRAMEWORKS:
        if target.url:
            print(f"# attach to {target.url}: nothing would be launched")
            return 0
        spec = launch_spec(target, prepared.config.workload.max_context, target.port or 8000)
        endpoint = endpoint_name(target, spec)
        for key, value in spec.env.items():
            print(f"export {key}={shlex.quote(value)}")
        print(shlex.join(spec.argv))
        print(f"# ready when GET {spec.url}{spec.ready_path} answers 200; metrics: "
              f"{spec.metrics_path or 'none'}; endpoint: {endpoint}; weights: {spec.weights}")
        return 0
    sim = prepared.sim
    if sim is not None:
        print(shlex.join(sim_backend.launch_argv(sim.model.name, sim.gpu.key, sim.tp, "127.0.0.1", target.port or 8000,
                                                 sim.profile.path if sim.profile else None)))
        return 0
    print(f"# attach to {target.url}: nothing would be launched")
    return 0
