"""`loadgen sweep`: load points one after another against one server, or the search for the saturation point.
Each point runs a copy of the sweep's RunConfig whose load is that point's."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from backends import eventloop
from loadgen.cli.common import (
    USER_ERRORS,
    Prepared,
    prepare,
    print_launch,
    print_result,
    run_config,
    scenario_of,
    write_report_if_asked,
)
from loadgen.config import (
    RUN_SECTIONS,
    TRACE,
    ConfigError,
    RunConfig,
    SloConfig,
    SweepConfig,
    add_arguments,
    build_sweep_config,
    given,
    point_name,
)
from loadgen.config.assemble import build_workload, load_plan
from loadgen.endpoint import open_endpoint
from loadgen.interrupts import INTERRUPTS
from loadgen.pace import judge
from loadgen.point import record_failed_start, record_interrupted_start, run_point, server_log_line
from loadgen.run_json import every_request_failed
from loadgen.rundir import create_run_dir, slug, write_json
from loadgen.sweep import (
    PointSize,
    find_max_rate,
    point_order,
    point_size,
    progress_line,
    saturation,
    saturation_text,
    sending_seconds,
    sweep_table,
)

SEARCH = ("until_slo", "slo_fraction", "start_qps", "max_qps", "precision", "rate_tolerance")


class _Stalled(Exception):
    """A point stopped because the server stalled: the sweep ends there, since every later point would measure a
    server that no longer answers (on an H200, LightLLM's inference process had died while its HTTP front stayed
    up)."""

    def __init__(self, entry: dict) -> None:
        super().__init__(entry["label"])
        self.entry = entry


def add_sweep_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="run load points one after another against one server",
                           description="Sweep --qps or --concurrency points (each its own run directory) against one "
                                       "server launched once, or find the highest QPS meeting an SLO (--until-slo).")
    groups = add_arguments(sweep, RUN_SECTIONS, skip=("load.qps", "load.concurrency"))
    add_arguments(sweep, {"sweep": SweepConfig}, only={"sweep": ("qps", "concurrency")}, groups=groups,
                  scenario=False)
    groups["search"] = sweep.add_argument_group("search")
    add_arguments(sweep, {"sweep": SweepConfig}, only={"sweep": SEARCH}, groups={"load": groups["search"]},
                  scenario=False)
    sweep.set_defaults(func=cmd_sweep)


def point_config(config: RunConfig, qps: float | None, concurrency: int | None, size: PointSize) -> RunConfig:
    """The RunConfig of one sweep point: the sweep's, with this point's load and size."""
    load = replace(config.load, qps=qps, concurrency=concurrency, num_requests=size.num_requests,
                   duration=size.duration_s, warmup=size.warmup)
    return replace(config, load=load, output=replace(config.output, report=False))  # one report, for the sweep


def _new_point_dir(base: Path, name: str) -> Path:
    """Each point its own directory, never another point's: listed points are checked to differ, and a search
    whose rates print alike (qps-21 twice, to six digits) gets qps-21-2."""
    path, n = base / name, 1
    while path.exists():
        n += 1
        path = base / f"{name}-{n}"
    path.mkdir()
    return path


def _dry_run(prepared: Prepared, sweep: SweepConfig) -> int:
    """What `--dry-run` promises: the launch command, and the points with their sizes; nothing starts, nothing is
    written."""
    print_launch(prepared)
    load = prepared.config.load
    if sweep.until_slo:
        print(f"# search: the highest QPS meeting {sweep.until_slo_text}, from {sweep.start_qps:g} req/s up to "
              f"{sweep.max_qps:g}")
        return 0
    for qps, concurrency in sweep.points():
        size = point_size(qps, concurrency, load.num_requests, load.duration, load.warmup)
        seconds = sending_seconds(size, qps)
        print(f"# point {point_name(qps, concurrency)}: " + (f"sends for about {seconds:.0f} s" if seconds is not None
                                                             else f"{size.num_requests} requests, closed loop"))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    scenario = scenario_of(args)
    config = run_config(args, scenario)
    sweep = build_sweep_config(given(args), scenario)
    if sweep.until_slo:
        config = replace(config, slo=SloConfig(limits_ms=sweep.until_slo))
    if config.load.arrival == TRACE:
        raise ConfigError("a sweep varies QPS or concurrency; --arrival trace replays fixed times (use loadgen run)")
    prepared = prepare(config)
    if config.target.dry_run:
        return _dry_run(prepared, sweep)
    backend, model_label = config.target.backend, prepared.model_label
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = create_run_dir(config.output.dir or f"results/{stamp}-sweep-{slug(backend)}-{slug(Path(model_label).name)}",
                          backend, model_label)
    points: list[dict] = []
    criteria = {"slo_fraction": sweep.slo_fraction, "rate_tolerance": sweep.rate_tolerance}
    listed = sweep.points()
    searching = sweep.until_slo is not None

    async def go() -> dict | None:
        async with open_endpoint(config, prepared.sim, base, prepared.headers) as endpoint:
            batch = (endpoint.info.get("sim") or {}).get("max_num_seqs")

            def size_of(qps: float | None, concurrency: int | None) -> PointSize:
                # points are sized by time unless the command line or the scenario sized them
                return point_size(qps, concurrency, config.load.num_requests, config.load.duration,
                                  config.load.warmup, batch)

            async def point(qps: float | None = None, concurrency: int | None = None) -> dict:
                label = f"qps {qps:g}" if qps is not None else f"concurrency {concurrency}"
                size = size_of(qps, concurrency)
                if not config.output.quiet:
                    index = len(points) + 1
                    later = None
                    if not searching:
                        rest = [sending_seconds(size_of(q, c), q) for q, c in listed[index:]]
                        later = None if None in rest else sum(rest)
                    print(progress_line(index, None if searching else len(listed), label,
                                        sending_seconds(size, qps), later), file=sys.stderr)
                run_dir = _new_point_dir(base, point_name(qps, concurrency))
                if size.warning:
                    print(f"warning: {size.warning}", file=sys.stderr)
                here = point_config(config, qps, concurrency, size)
                # the same lengths each point, each point its own text (a prefix cache must not carry over)
                workload = build_workload(here, endpoint.max_context, prepared.tokenizer, prepared.dataset,
                                          stream=len(points))
                summary, interrupted = await run_point(endpoint, here, load_plan(here), workload, run_dir,
                                                       prepared.headers, prepared.count_tokens, label=label)
                verdict = judge(summary, sweep.slo_fraction, sweep.rate_tolerance)
                entry = {"label": label, "qps": qps, "concurrency": concurrency, "run_dir": str(run_dir),
                         "summary": summary, "verdict": verdict.to_json()}
                points.append(entry)
                stalled = summary.get("stalled")
                write_json(base / "sweep.json", _sweep_json(config, endpoint.simulated, points, None, criteria,
                                                            label if stalled else None))
                if not config.output.quiet:
                    print(f"{label}: " + ("meets" if verdict.meets else "fails: " + "; ".join(verdict.reasons)),
                          file=sys.stderr)
                if interrupted:
                    raise KeyboardInterrupt
                if stalled:
                    raise _Stalled(entry)
                return entry

            if searching:
                found: dict[float, dict] = {}

                async def evaluate(rate: float) -> bool:
                    found[rate] = await point(qps=rate)
                    return found[rate]["verdict"]["meets"]

                search = await find_max_rate(evaluate, sweep.start_qps, sweep.max_qps, sweep.precision)
                search.update(slo=sweep.until_slo_text, **criteria)
                search.update(saturation(search, found))
                write_json(base / "sweep.json", _sweep_json(config, endpoint.simulated, points, search, criteria))
                return search
            for q, c in listed:
                await point(qps=q, concurrency=c)
            return None

    stalled: dict | None = None
    try:
        with INTERRUPTS.on_force(lambda: None if points else record_interrupted_start(base, config)):
            search = eventloop.run(INTERRUPTS.guarded(go()))
    except _Stalled as exc:
        stalled, search = exc.entry, None
    except USER_ERRORS as exc:
        record_failed_start(base, config, exc)
        raise
    except KeyboardInterrupt:
        if not points:
            record_interrupted_start(base, config)
        print(f"sweep interrupted after {len(points)} point(s); results in {base}", file=sys.stderr)
        return 130
    simulated = bool(json.loads((base / "sweep.json").read_text()).get("simulated")) if points else prepared.sim is not None
    text = sweep_table(sorted(points, key=point_order), simulated,
                       sweep.slo_fraction, sweep.rate_tolerance)
    if search is not None:
        text += "\n\n" + saturation_text(search, search["slo"], sweep.slo_fraction, sweep.rate_tolerance)
    text += f"\nresults: {base}"
    result = json.loads((base / "sweep.json").read_text())
    print_result(config.output, result, text, base)
    write_report_if_asked(config.output, base)
    if stalled is not None:
        later = " (later points were not run: they would measure a server that no longer answers)"
        print(f"loadgen: error: sweep stopped at point {stalled['label']}: {stalled['summary']['stopped_early']}"
              f"{later if searching or len(points) < len(listed) else ''}; "
              f"{len(points)} point(s) in {base / 'sweep.json'}", file=sys.stderr)
        log_line = server_log_line(stalled["summary"])
        if log_line:
            print(log_line, file=sys.stderr)
        return 1
    failures = [every_request_failed(p["summary"]) for p in points]
    if points and all(failures):
        print(f"loadgen: error: every point measured nothing: {points[0]['label']}: {failures[0]}; the server's "
              f"answers are in {base}/*/requests.jsonl", file=sys.stderr)
        return 1
    return 0


def _sweep_json(config: RunConfig, simulated: bool, points: list[dict], search: dict | None, criteria: dict,
                stalled_at: str | None = None) -> dict:
    keep = ("requests", "throughput", "ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "goodput", "lateness_ms", "pace")
    return {
        "simulated": simulated,
        "scenario": config.scenario_name,
        **criteria,
        "points": [{k: v for k, v in p.items() if k != "summary"} | {k: p["summary"].get(k) for k in keep}
                   for p in points],
        "search": search,
        "stalled_at": stalled_at,  # the point at which the server stopped answering: the sweep ended there
    }
