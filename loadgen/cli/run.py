"""`loadgen run`: one load test, against the embedded sim, a launched framework or a URL."""

from __future__ import annotations

import argparse
import sys

from backends import eventloop
from loadgen.cli.common import USER_ERRORS, prepare, print_launch, print_result, run_config
from loadgen.config import RUN_SECTIONS, add_arguments
from loadgen.config.assemble import build_workload, load_plan
from loadgen.endpoint import open_endpoint
from loadgen.interrupts import INTERRUPTS
from loadgen.outputs.console import format_summary
from loadgen.point import record_failed_start, record_interrupted_start, run_point, server_log_line
from loadgen.run_json import every_request_failed
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
        return print_launch(prepared)
    run_dir = create_run_dir(config.output.dir, config.target.backend, prepared.model_label)

    async def go():
        async with open_endpoint(config, prepared.sim, run_dir, prepared.headers) as endpoint:
            workload = build_workload(config, endpoint.max_context, prepared.tokenizer, prepared.dataset)
            return await run_point(endpoint, config, plan, workload, run_dir, prepared.headers, prepared.count_tokens)

    try:
        with INTERRUPTS.on_force(lambda: record_interrupted_start(run_dir, config)):  # a forced exit says so too
            summary, interrupted = eventloop.run(INTERRUPTS.guarded(go()))
    except USER_ERRORS as exc:
        record_failed_start(run_dir, config, exc)
        raise
    except KeyboardInterrupt:
        record_interrupted_start(run_dir, config)
        raise
    print_result(config.output, summary, format_summary(summary, run_dir), run_dir)
    failure = every_request_failed(summary)
    log_line = server_log_line(summary)  # a launched server's own last error, when it stopped or failed the run
    if failure and not interrupted and not summary.get("stopped_early"):  # an error limit says why it stopped
        print(f"loadgen: error: {failure}; the server's answers are in {run_dir / 'requests.jsonl'}", file=sys.stderr)
        if log_line:
            print(log_line, file=sys.stderr)
        return 1
    if summary.get("stopped_early"):
        print(f"loadgen: run stopped early: {summary['stopped_early']}; what was measured is in {run_dir}",
              file=sys.stderr)
        if log_line:
            print(log_line, file=sys.stderr)
        return 1
    return 130 if interrupted else 0
