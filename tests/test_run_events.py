"""A run's events and the listeners on them: handlers fire in subscription order, async ones are awaited, and
the stop signal and error limit end a run once, with the first reason."""

import asyncio
import json

from conftest import run_loadgen
from loadgen.load import LoadPlan
from loadgen.load.stop import ErrorLimit, StopSignal
from loadgen.records import RequestRecord
from loadgen.run_events import RunEvents


def _record(status: str, index: int = 0) -> RequestRecord:
    return RequestRecord(index=index, phase="measured", status=status, sent_s=0.0, finished_s=0.1)


def test_listeners_hear_events_in_subscription_order_and_async_ones_are_awaited():
    heard: list[str] = []

    class Writer:
        def record(self, record):
            heard.append(f"writer {record.index}")

        def stopped(self, outcome):
            heard.append("writer closed")

    class Scraper:
        async def started(self):
            await asyncio.sleep(0)
            heard.append("scraper started")

        async def stopped(self, outcome):
            await asyncio.sleep(0)
            heard.append("scraper stopped")

    events = RunEvents()
    events.subscribe(Writer())
    events.subscribe(Scraper())
    events.record.add_listener(lambda r: heard.append(f"limit {r.index}"))
    asyncio.run(events.started.fire_and_wait())
    events.record.fire(_record("ok", 7))
    asyncio.run(events.stopped.fire_and_wait(None))
    assert heard == ["scraper started", "writer 7", "limit 7", "writer closed", "scraper stopped"]
    assert events.finished.handlers == []  # neither listener has a finished()


def test_error_limit_requests_the_stop_once_with_the_first_reason():
    stop = StopSignal()
    halted: list[str | None] = []
    stop.on_request(lambda: halted.append(stop.reason))
    limit = ErrorLimit(LoadPlan(concurrency=1, max_errors=2), stop)
    for i, status in enumerate(["ok", "error:http", "timeout", "cancelled"]):
        limit.record(_record(status, i))
    assert not stop.requested and limit.failed == 2  # cancelled is not a failure
    limit.record(_record("error:stream", 4))
    limit.record(_record("error:http", 5))
    assert halted == ["3 failed requests exceed --max-errors 2"] and not stop.interrupted
    stop.request()  # a later Ctrl-C keeps the first reason
    assert stop.reason == halted[0] and halted == [halted[0]]


def test_ctrl_c_is_an_interruption():
    stop = StopSignal()
    stop.request()
    assert stop.interrupted and stop.reason is None


def test_gpu_telemetry_listener_skips_the_simulated_engine(tmp_path):
    out = tmp_path / "r"
    proc = run_loadgen("run", "--num-requests", "4", "--concurrency", "2", "--input-len", "16", "--output-len", "4",
                       "--gpu-telemetry", "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "GPU telemetry: skipped (the simulated engine uses no GPU)" in proc.stderr
    assert not (out / "gpu.jsonl").exists() and "energy" not in json.loads((out / "summary.json").read_text())
    assert (out / "sim_ground_truth.jsonl").exists()  # the sim's ground-truth listener did run


def test_report_is_a_listener_of_the_finished_run_and_a_sweep_writes_one(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    proc = run_loadgen("run", "--num-requests", "20", "--input-len", "32", "--output-len", "8", "--quiet",
                       "--report", "--output", str(run), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"report: {run / 'report.html'}" in proc.stderr and (run / "report.html").stat().st_size > 0
    assert json.loads((run / "run.json").read_text())["status"] == "finished"  # final before the report read it
    sweep = tmp_path / "sweep"
    proc = run_loadgen("sweep", "--qps", "2,4", "--num-requests", "10", "--input-len", "32", "--output-len", "8",
                       "--quiet", "--report", "--output", str(sweep), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (sweep / "report.html").exists() and proc.stderr.count("report: ") == 1
    assert not (sweep / "qps-2" / "report.html").exists() and not (sweep / "qps-4" / "report.html").exists()
