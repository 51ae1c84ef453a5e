"""A closed-loop run stops on Ctrl-C, SIGTERM and a crossed error limit, in one process and over --workers 2.

Each run asks for far more requests than it could send before the test's timeout, so a run that does not stop
fails by timing out; the measured stop delay is printed (pytest -s), never asserted: the machine may be busy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, read_requests

ASKED = 100_000
TIMEOUT_S = 60


def _start(out: Path, url: str, workers: int, *extra: str) -> subprocess.Popen:
    # Its own session, so that a run that does not stop can be killed with all its worker processes.
    return subprocess.Popen([sys.executable, "-m", "loadgen", "run", "--url", url, "--concurrency", "8",
                             "--num-requests", str(ASKED), "--input-len", "16", "--output-len", "8",
                             "--workers", str(workers), "--output", str(out), "--quiet", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait(proc: subprocess.Popen) -> str:
    try:
        return proc.communicate(timeout=TIMEOUT_S)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the closed-loop run did not stop within {TIMEOUT_S} s")


def _check_written(out: Path, status: str) -> list[dict]:
    records = read_requests(out)
    assert 0 < len(records) < ASKED
    assert len({r["index"] for r in records}) == len(records)  # no request sent twice
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["total"] == len(records)
    assert json.loads((out / "run.json").read_text())["status"] == status
    return records


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_closed_loop_stops_on_a_signal(tmp_path, start_sim, workers, sig):
    sim = start_sim("--fixed-ttft", "5ms", "--fixed-itl", "5ms")
    out = tmp_path / "r"
    proc = _start(out, sim.url, workers)
    deadline = time.monotonic() + TIMEOUT_S
    while len(read_requests(out)) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(sig)
    sent = time.monotonic()
    stderr = _wait(proc)
    print(f"\nstop delay ({sig.name}, workers={workers}): {time.monotonic() - sent:.2f} s (measured, not asserted)")
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    records = _check_written(out, "interrupted")
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True
    assert set(Counter(r["status"] for r in records)) <= {"ok", "cancelled"}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("limit", [("--max-errors", "5"), ("--max-error-rate", "0.2")],
                         ids=["max-errors", "max-error-rate"])
def test_closed_loop_stops_at_an_error_limit(tmp_path, start_fault_server, workers, limit):
    server = start_fault_server("--mix", "ok:1,http500:1", "--tokens", "4")
    out = tmp_path / "r"
    proc = _start(out, server.url, workers, *limit)
    stderr = _wait(proc)
    exited_ns = time.perf_counter_ns()  # CLOCK_MONOTONIC, the clock of the run's records
    assert proc.returncode == 1 and "stopped early" in stderr and limit[0] in stderr, stderr
    records = _check_written(out, "stopped_early")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] and limit[0] in summary["stopped_early"]
    # The record that crossed the limit is the last failure the limit counted; after it the run only winds down.
    origin = json.loads((out / "run.json").read_text())["origin_perf_counter_ns"]
    crossing = max(r["finished_s"] for r in records if r["status"].startswith("error"))
    print(f"\nstop delay ({limit[0]}, workers={workers}): at most {(exited_ns - origin) / 1e9 - crossing:.2f} s "
          f"from the last failure to the process's exit (measured, not asserted)")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_while_the_run_starts_stops_it_cleanly(tmp_path, start_sim, sig):
    """requests.jsonl appears when the run's listeners start; worker processes then take a second or more to
    start. A signal in that window used to cancel the run before its stop handlers were installed: a traceback,
    exit 1, and a run.json that said the run failed."""
    sim = start_sim("--fixed-ttft", "5ms", "--fixed-itl", "5ms")
    out = tmp_path / "r"
    proc = _start(out, sim.url, 2)
    deadline = time.monotonic() + TIMEOUT_S
    while not (out / "requests.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(sig)
    stderr = _wait(proc)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["requests"]["total"] == len(read_requests(out)) < ASKED
    deadline = time.monotonic() + 10
    while _in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _in_session(proc.pid)


def _in_session(sid: int) -> list[int]:
    """Live processes of the run's session (it was started in one of its own; its client workers stay in it). Not
    `pgrep -f loadgen.load.worker`: that also sees other runs' workers on the machine, and failed when one ran."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split() if stat else []
        if fields and int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry))
    return found
