"""Run one load point against an endpoint and write its run directory, record by record.

`run_point` assembles a run and fires its events: the options it reads (`point_settings`, the one place), the
listeners those ask for (`listeners_for`: record file, progress, telemetry, sim ground truth, summary, CSV), run.json
(loadgen/run_json.py) and the runner (loadgen/load/). It calls no listener by name.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from backends.registry import protocol_for
from loadgen import run_json
from loadgen.client import Target
from loadgen.config import RunConfig
from loadgen.endpoint import Endpoint
from loadgen.interrupts import INTERRUPTS
from loadgen.listeners.files import CsvFiles, HtmlReport, RecordFile, SummaryFile
from loadgen.listeners.progress import ProgressBar
from loadgen.listeners.sim_truth import SimGroundTruth
from loadgen.listeners.telemetry import GpuTelemetry, ServerMetrics
from loadgen.load import LoadOutcome, LoadPlan, LocalRunner
from loadgen.load.processes import ProcessRunner, choose_workers, client_summary, on_this_host
from loadgen.metrics import client_cpu_warning, summarize
from loadgen.records import read_records
from loadgen.redaction import redact
from loadgen.run_events import RunEvents, RunResult
from loadgen.rundir import environment, utc_now, write_json


@dataclass(frozen=True)
class PointSettings:
    """What a point takes from the run's options."""

    slo: dict[str, float] | None  # metric -> limit in ms, remembering the text it was read from
    ignore_eos: bool
    workers: int | str  # a count or "auto"
    tokenizer: str | None  # for the worker processes, which load it themselves
    quiet: bool
    csv: bool
    gpu_telemetry: bool
    gpu_sample_interval: float
    scrape_interval: float | None
    scenario: str | None
    gpu: str | None  # what a simulated engine stands for when it does not say, and a launched framework's GPUs
    gpus: int | None
    report: bool = False  # report.html when the point has finished


def point_settings(config: RunConfig) -> PointSettings:
    """The one place a point reads the run's configuration."""
    return PointSettings(slo=config.slo.limits_ms or None, ignore_eos=config.target.ignore_eos,
                         workers=config.load.workers, tokenizer=config.workload.tokenizer,
                         quiet=config.output.quiet, csv=config.output.csv,
                         gpu_telemetry=config.telemetry.gpu_sampling,
                         gpu_sample_interval=config.telemetry.gpu_sample_interval,
                         scrape_interval=config.telemetry.scrape_interval, scenario=config.scenario_name,
                         gpu=config.target.gpu, gpus=config.target.gpus, report=config.output.report)


def listeners_for(settings: PointSettings, endpoint: Endpoint, run_dir: Path, headers: dict[str, str], workload,
                  plan: LoadPlan, label: str) -> list[object]:
    """In the order they hear each event: whoever adds to the summary comes before SummaryFile and CsvFiles."""
    desc = (label or f"{endpoint.info['name']} {endpoint.model}") + (" (SIMULATED)" if endpoint.simulated else "")
    multi_turn = getattr(workload, "turns", 1) > 1 or getattr(workload, "multi_turn", False)
    listeners: list[object] = [ProgressBar(desc, plan.total, multi_turn, settings.quiet), RecordFile(run_dir)]
    if settings.gpu_telemetry:
        listeners.append(GpuTelemetry(run_dir, settings.gpu_sample_interval, endpoint.simulated))
    if endpoint.simulated:
        listeners.append(SimGroundTruth(endpoint.url))
    if endpoint.metrics_url and settings.scrape_interval:
        listeners.append(ServerMetrics(endpoint.metrics_url, run_dir, settings.scrape_interval, headers))
    listeners.append(SummaryFile())
    if settings.csv:
        listeners.append(CsvFiles())
    return listeners


def _run_info(settings: PointSettings, endpoint: Endpoint, protocol, plan: LoadPlan, workload, workers: int,
              slo: dict | None, headers: dict[str, str]) -> dict:
    sim = endpoint.info.get("sim") or {}
    return {
        "scenario": settings.scenario,
        "backend": endpoint.info,
        "model": endpoint.model,
        # what the sim stands for, from the sim itself (an attached serve-sim was started with its own flags)
        "gpu": sim.get("gpu", settings.gpu) if endpoint.simulated else None,
        "gpus": (sim.get("tp", settings.gpus) if endpoint.simulated
                 else settings.gpus if endpoint.server is not None else None),  # a launched framework's GPUs
        "endpoint": protocol.endpoint,
        "path": protocol.path_for(endpoint.model),
        "ignore_eos": protocol.ignore_eos,
        "workload": workload.describe(),
        "load": {**plan.describe(), "workers": workers},
        "slo_ms": slo,
        "api_key_given": bool(headers),
    }


def _summary(records, slo: dict | None, endpoint: Endpoint, workload, outcome: LoadOutcome,
             client_cpu: tuple[float, float]) -> dict:
    summary = summarize(records, slo, simulated=endpoint.simulated)
    summary["prompt_source"] = workload.prompt_source
    if endpoint.simulated:
        sim_info = endpoint.info.get("sim") or {}
        summary["sim_cost_model"] = sim_info.get("cost_model")
        summary["warnings"].extend(sim_info.get("warnings") or [])
    summary["client"] = client_summary(client_cpu, outcome.workers)
    warning = client_cpu_warning(summary["client"]["busiest_process_cpu_s"], summary["client"]["wall_s"])
    if warning:
        summary["warnings"].append(warning)
    summary["interrupted"] = outcome.interrupted
    summary["stopped_early"] = outcome.stopped_early
    summary["stalled"] = outcome.stalled
    if outcome.stopped_early:
        summary["warnings"].insert(0, f"run stopped early: {outcome.stopped_early}")
    if outcome.stopped_early or (not outcome.interrupted and run_json.every_request_failed(summary)):
        quote = _server_log_error(endpoint)
        if quote:
            summary["server_log_error"] = quote
    return summary


def _server_log_error(endpoint: Endpoint) -> str | None:
    """Why a server loadgen launched stopped answering, from its own log (None for --url: no log of ours)."""
    return run_json.server_log_error(endpoint.server.log_path) if endpoint.server is not None else None


def server_log_line(summary: dict) -> str | None:
    """The one line `run` and `sweep` print after saying a run stopped early or failed."""
    quote = summary.get("server_log_error")
    return redact(f"server.log: {quote}") if quote else None


async def run_point(endpoint: Endpoint, config: RunConfig, plan: LoadPlan, workload, run_dir: Path,
                    headers: dict[str, str], count_tokens=None, label: str = "") -> tuple[dict, bool]:
    """(summary, interrupted). Records are on disk the moment each request ends; Ctrl-C stops the point.
    Nothing per request is held in memory during the run: the summary is computed from requests.jsonl."""
    settings = point_settings(config)
    protocol = protocol_for(endpoint.protocol_name, settings.ignore_eos, endpoint.info.get("name"))
    target = Target(endpoint.url, endpoint.model, protocol, headers, count_tokens)
    workers = choose_workers(settings.workers, plan, os.cpu_count() or 1, on_this_host(endpoint.url))
    info = run_json.RunJson(run_dir, _run_info(settings, endpoint, protocol, plan, workload, workers, settings.slo,
                                               headers),
                            workload)
    with INTERRUPTS.on_force(lambda: _forced(info)):
        return await _run(settings, endpoint, protocol, target, workers, info, plan, workload, run_dir, headers, label)


async def _run(settings: PointSettings, endpoint: Endpoint, protocol, target: Target, workers: int,
               info: run_json.RunJson, plan: LoadPlan, workload, run_dir: Path, headers: dict[str, str],
               label: str) -> tuple[dict, bool]:
    slo = settings.slo
    events = RunEvents()
    for listener in [*listeners_for(settings, endpoint, run_dir, headers, workload, plan, label), info]:
        events.subscribe(listener)  # run.json is final after the summary's files: a finished run has them
    if settings.report:
        events.subscribe(HtmlReport())  # reads the finished run directory
    outcome = None
    clock = [time.process_time(), time.perf_counter()]  # reset once the listeners started: the load's own cost

    async def start_and_run() -> LoadOutcome:
        await events.started.fire_and_wait()
        clock[:] = [time.process_time(), time.perf_counter()]
        runner = (ProcessRunner(target, workload, plan, events, workers, settings.tokenizer) if workers > 1
                  else LocalRunner(target, workload, plan, events))
        return await runner.run()

    stop = _RunStop()
    try:
        # The run's stop covers the listeners' start and the runner's (worker processes take seconds to start) as
        # well as the load: a signal there stops the point with nothing sent, not with a traceback.
        INTERRUPTS.enter("running")
        point_task = asyncio.create_task(start_and_run())
        stop.task = point_task
        with INTERRUPTS.run_stop(stop):
            try:
                outcome = await point_task
            except asyncio.CancelledError:
                if not stop.requested:
                    raise
                outcome = LoadOutcome(time.perf_counter_ns(), [], True, 0.0)  # stopped before the clock started
            finally:
                client_cpu = (time.process_time() - clock[0], time.perf_counter() - clock[1])
    except BaseException as exc:
        quote = None if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)) else _server_log_error(endpoint)
        if quote:
            print(redact(f"server.log: {quote}"), file=sys.stderr)
        info.failed(exc, **({"server_log_error": quote} if quote else {}))
        raise
    finally:
        await events.stopped.fire_and_wait(outcome)

    # A signal from here on is noted and the summary finished first: it takes moments, and it is what the run
    # measured. A second signal still exits at once.
    with INTERRUPTS.deferred("summarising"):
        INTERRUPTS.reach("summarising")
        records = read_records(run_dir / "requests.jsonl")
        summary = _summary(records, slo, endpoint, workload, outcome, client_cpu)
        await events.finished.fire_and_wait(RunResult(run_dir, records, summary, outcome))
        late = INTERRUPTS.requested and not outcome.interrupted
        if late:  # the load was complete; run.json says what stopped the command
            info.ended("interrupted", interrupted_in=INTERRUPTS.phase_when_stopped, signal=INTERRUPTS.signal_name)
    return summary, outcome.interrupted or late


def record_failed_start(run_dir: Path, config: RunConfig, error: BaseException) -> None:
    """A run that failed before its first request still leaves a run.json saying what and why."""
    run_json.record_failed_start(run_dir, config.scenario_name, error)


def record_interrupted_start(run_dir: Path, config: RunConfig) -> None:
    """A run stopped by a signal before its first point started (launching the engine, waiting for it to be ready,
    preparing the workload) leaves a run.json saying so, and in which phase; a point's own run.json says the rest."""
    if (run_dir / "run.json").exists():
        return
    write_json(run_dir / "run.json", {
        "status": "interrupted",
        "finished_at": utc_now(),
        "interrupted_in": INTERRUPTS.phase_when_stopped,
        "signal": INTERRUPTS.signal_name,
        "environment": environment(),
        "scenario": config.scenario_name,
        "server_log": str(run_dir / "server.log") if (run_dir / "server.log").exists() else None,
    })


def _forced(info: run_json.RunJson) -> None:
    """A second signal exits at once: run.json must not keep saying `running`."""
    if info.info.get("status") == "running":
        info.ended("interrupted", interrupted_in=INTERRUPTS.phase_when_stopped, signal=INTERRUPTS.signal_name,
                   forced=True)


class _RunStop:
    """The first stop signal during a point (loadgen/interrupts.py calls it in the event loop): cancel in-flight
    requests, keep and summarise what was measured. A second one is the interrupts' forced exit."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.requested = False

    def __call__(self) -> None:
        if self.requested or self.task is None:
            return
        self.requested = True
        self.task.cancel()
