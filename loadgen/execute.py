"""Run one load point against an endpoint and write its run directory, record by record."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from backends.registry import protocol_for
from loadgen.accuracy import timing_error
from loadgen.client import Target
from loadgen.launch import Endpoint, get_json
from loadgen.metrics import client_cpu_warning, summarize
from loadgen.csv_export import write_requests_csv, write_summary_csv
from loadgen.records import RecordWriter, read_records
from loadgen.server_metrics import MetricsScraper, read_server_metrics, summarize_server_metrics
from loadgen.telemetry import GPUSampler, energy_summary, nvml_unavailable_reason, read_gpu_samples
from loadgen.rundir import environment, utc_now, write_json
from loadgen.load import LoadPlan, LocalRunner
from loadgen.load.processes import ProcessRunner, choose_workers, client_summary, on_this_host
from loadgen.slo import parse_slo


async def run_point(endpoint: Endpoint, opts: argparse.Namespace, plan: LoadPlan, workload, run_dir: Path,
                    headers: dict[str, str], count_tokens=None, label: str = "") -> tuple[dict, bool]:
    """(summary, interrupted). Records are on disk the moment each request ends; Ctrl-C stops the point.
    Nothing per request is held in memory during the run: the summary is computed from requests.jsonl."""
    from tqdm import tqdm

    slo = parse_slo(opts.slo) if opts.slo else None
    protocol = protocol_for(endpoint.protocol_name, opts.ignore_eos, endpoint.info.get("name"))
    target = Target(endpoint.url, endpoint.model, protocol, headers, count_tokens)
    workers = choose_workers(opts.workers, plan, os.cpu_count() or 1, on_this_host(endpoint.url))
    run_info: dict = {
        "status": "running",
        "started_at": utc_now(),
        "environment": environment(),
        "scenario": opts.scenario_name,
        "backend": endpoint.info,
        "model": endpoint.model,
        # what the sim stands for, from the sim itself (an attached serve-sim was started with its own flags)
        "gpu": (endpoint.info.get("sim") or {}).get("gpu", opts.gpu) if endpoint.simulated else None,
        "gpus": ((endpoint.info.get("sim") or {}).get("tp", opts.gpus) if endpoint.simulated
                 else opts.gpus if endpoint.server is not None else None),  # a launched framework's GPUs
        "endpoint": protocol.endpoint,
        "path": protocol.path_for(endpoint.model),
        "ignore_eos": protocol.ignore_eos,
        "workload": workload.describe(),
        "load": {**plan.describe(), "workers": workers},
        "slo_ms": slo,
        "api_key_given": bool(headers),
    }
    write_json(run_dir / "run.json", run_info)
    total = None if plan.num_requests is None else plan.num_requests + plan.warmup
    desc = (label or f"{endpoint.info['name']} {endpoint.model}") + (" (SIMULATED)" if endpoint.simulated else "")
    unit = "req"
    if getattr(workload, "turns", 1) > 1 or getattr(workload, "multi_turn", False):
        # --num-requests counts conversations but the bar advances per turn, and how many turns a conversation
        # has is known only as it runs (it ends at a failed turn or at the context): count turns, total unknown
        if total is not None:
            desc += f", {total} conversations"
        total, unit = None, "turn"
    progress = tqdm(total=total, unit=unit, disable=bool(opts.quiet), file=sys.stderr, dynamic_ncols=True,
                    desc=desc)
    writer = RecordWriter(run_dir / "requests.jsonl")
    sampler = _start_gpu_sampler(opts, endpoint, run_dir)
    scraper = None
    if endpoint.metrics_url and opts.scrape_interval:
        scraper = MetricsScraper(endpoint.metrics_url, run_dir / "server_metrics.jsonl", opts.scrape_interval, headers)
        await scraper.start()
    try:
        def on_record(record) -> None:
            writer.write(record)
            progress.update(1)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        runner = (ProcessRunner(target, workload, plan, on_record, workers, opts.tokenizer) if workers > 1
                  else LocalRunner(target, workload, plan, on_record))
        load_task = asyncio.create_task(runner.run())
        remove = _install_stop_handlers(load_task, endpoint.kill)
        try:
            outcome = await load_task
        finally:
            remove()
            client_cpu = (time.process_time() - cpu0, time.perf_counter() - wall0)
    except BaseException as exc:
        run_info.update(status="failed", finished_at=utc_now(), error=(str(exc).splitlines() or [repr(exc)])[0])
        write_json(run_dir / "run.json", run_info)
        raise
    finally:
        progress.close()
        writer.close()
        if sampler is not None:
            sampler.stop()
        if scraper is not None:
            await scraper.stop()

    records = read_records(run_dir / "requests.jsonl")
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
    if outcome.stopped_early:
        summary["warnings"].insert(0, f"run stopped early: {outcome.stopped_early}")
    if endpoint.simulated:
        ids = {r.response_id for r in records if r.response_id}
        truth = [g for g in ((await get_json(endpoint.url + "/sim/requests")) or {}).get("requests", []) if g["id"] in ids]
        with open(run_dir / "sim_ground_truth.jsonl", "w") as f:
            for g in truth:
                f.write(json.dumps(g) + "\n")
        summary["client_timing_error"] = timing_error(records, truth, outcome.origin_ns)
    if sampler is not None:
        measured = [r for r in records if r.phase == "measured"]
        if measured:
            window = (min(r.sent_s for r in measured), max(r.finished_s for r in measured))
            summary["energy"] = energy_summary(read_gpu_samples(run_dir / "gpu.jsonl", outcome.origin_ns), window,
                                               summary["tokens"]["output_total"])
    if scraper is not None:
        summary["server_metrics"] = summarize_server_metrics(read_server_metrics(run_dir / "server_metrics.jsonl"))
    write_json(run_dir / "summary.json", summary)
    if opts.csv:
        write_requests_csv(run_dir / "requests.csv", records)
        write_summary_csv(run_dir / "summary.csv", summary)
    status = "interrupted" if outcome.interrupted else ("stopped_early" if outcome.stopped_early else "finished")
    run_info.update(status=status, finished_at=utc_now(), stopped_early=outcome.stopped_early,
                    origin_perf_counter_ns=outcome.origin_ns, wall_s=outcome.wall_s, workload=workload.describe())
    write_json(run_dir / "run.json", run_info)
    return summary, outcome.interrupted


def _start_gpu_sampler(opts: argparse.Namespace, endpoint: Endpoint, run_dir: Path) -> GPUSampler | None:
    if not opts.gpu_telemetry:
        return None
    if endpoint.simulated:
        print("GPU telemetry: skipped (the simulated engine uses no GPU)", file=sys.stderr)
        return None
    reason = nvml_unavailable_reason()
    if reason:
        print(f"GPU telemetry: skipped ({reason})", file=sys.stderr)
        return None
    sampler = GPUSampler(run_dir / "gpu.jsonl", opts.gpu_sample_interval)
    sampler.start()
    return sampler


def record_failed_start(run_dir: Path, opts: argparse.Namespace, error: BaseException) -> None:
    """A run that failed before its first request still leaves a run.json saying what and why."""
    if (run_dir / "run.json").exists():
        return
    write_json(run_dir / "run.json", {
        "status": "failed",
        "finished_at": utc_now(),
        "error": (str(error).splitlines() or [repr(error)])[0],
        "environment": environment(),
        "scenario": opts.scenario_name,
        "server_log": str(run_dir / "server.log") if (run_dir / "server.log").exists() else None,
    })


def _install_stop_handlers(load_task: asyncio.Task, kill_server):
    """First Ctrl-C/SIGTERM: cancel in-flight requests, keep and summarise what was measured. Second: kill the
    launched server's process group and exit at once (records already written stay on disk)."""
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
            kill_server()
            os._exit(130)

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop)
    return lambda: [loop.remove_signal_handler(sig) for sig in signals]
