"""The stall watchdog (--stall-timeout): a server that stops sending while requests are in flight ends the run
early, says why, and quotes a launched server's last error line; a sweep ends at the point that stalled.

The fault server's --stall-after N is a whole server going silent (an engine that died behind a live HTTP front,
as LightLLM did on an H200): every stream stops at its next write. Runs ask for far more requests than they
could send before the test's timeout, so a watchdog that does not fire fails the test by timing out; nothing
here asserts how fast it fired.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT

TIMEOUT_S = 300
ASKED = 100_000
OOM_LINE = ("ERROR 12-02 07:37:04 [model_rpc.py:215] Batch decode encountered an unexpected ERROR: CUDA out of "
            "memory. Tried to allocate 162.00 MiB. GPU 0 has a total capacity of 139.80 GiB of which 12.00 MiB is "
            "free. Including non-PyTorch memory, this process has 139.78 GiB memory in use. " + "x" * 300)


def _loadgen(*args: str) -> subprocess.CompletedProcess:
    # Its own session, so that a run that does not stop can be killed with its worker processes and engine.
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", *args, "--input-len", "16", "--output-len", "16",
                             "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"loadgen {' '.join(args[:1])} did not stop within {TIMEOUT_S} s: the stall was not noticed")
    assert "Traceback" not in err, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]


def _check_stalled(run: Path, served: int) -> tuple[dict, Counter]:
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped_early" and info["stalled"] is True
    assert info["stopped_early"].startswith("the server stalled: no byte on ")
    assert info["stopped_early"].endswith("in flight for 2 s")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stalled"] is True and summary["warnings"][0] == f"run stopped early: {info['stopped_early']}"
    records = _records(run)
    statuses = Counter(r["status"] for r in records)
    # the requests answered before the server went silent are on disk, finished; those it held are cancelled
    assert set(statuses) == {"ok", "cancelled"} and 0 < statuses["ok"] < served
    assert len(records) < ASKED and summary["requests"]["total"] == len(records)
    assert len({r["index"] for r in records}) == len(records)
    return info, statuses


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("load", [("--qps", "20"), ("--concurrency", "6")], ids=["open", "closed"])
def test_a_server_that_goes_silent_stops_the_run(tmp_path, start_fault_server, workers, load):
    server = start_fault_server("--tokens", "16", "--itl", "0.01", "--stall-after", "30")
    out = tmp_path / "r"
    proc = _loadgen("run", "--url", server.url, *load, "--num-requests", str(ASKED), "--stall-timeout", "2",
                    "--workers", str(workers), "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    info, statuses = _check_stalled(out, server.log()["served"])
    assert f"run stopped early: {info['stopped_early']}" in proc.stderr
    assert "server.log" not in proc.stderr and "server_log_error" not in info  # --url: no log of ours to quote
    if load[0] == "--concurrency":  # every user was waiting on a silent stream
        assert statuses["cancelled"] == 6


def test_a_quiet_request_on_a_server_that_streams_others_does_not_trip(tmp_path, start_fault_server):
    """The condition is run-wide: the first request waits 6 s for its first token (longer than the 3 s stall
    timeout) while the others stream; a per-request rule would have stopped this run."""
    server = start_fault_server("--mix", "slow:1,ok:999", "--in-order", "--slow-first", "6", "--tokens", "16",
                                "--itl", "0.01")
    out = tmp_path / "r"
    proc = _loadgen("run", "--url", server.url, "--qps", "10", "--num-requests", "100", "--stall-timeout", "3",
                    "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["stalled"] is False and info["stopped_early"] is None
    records = sorted(_records(out), key=lambda r: r["sent_s"])
    assert len(records) == 100 and all(r["status"] == "ok" for r in records)
    slow = records[0]
    assert slow["first_token_s"] - slow["sent_s"] > 3  # it was silent for longer than the stall timeout


def test_off_disables_the_watchdog(tmp_path, start_fault_server):
    """--stall-timeout off: the silent requests end by the per-request --timeout instead."""
    server = start_fault_server("--tokens", "16", "--itl", "0.01", "--stall-after", "4")
    out = tmp_path / "r"
    proc = _loadgen("run", "--url", server.url, "--concurrency", "2", "--num-requests", "6", "--stall-timeout",
                    "off", "--timeout", "3s", "--output", str(out))
    info = json.loads((out / "run.json").read_text())
    assert info["status"] != "stopped_early" and info["stalled"] is False, proc.stderr
    assert info["load"]["stall_timeout_s"] is None
    assert Counter(r["status"] for r in _records(out))["timeout"] > 0


def test_a_launched_server_that_stalls_is_quoted_from_its_log(tmp_path):
    """A stand-in for LightLLM on the H200: the framework's launch argv starts the fault server, which writes the
    engine's CUDA OOM line to its stderr (server.log) and goes silent after 8 completions."""
    out = tmp_path / "r"
    engine = (f"{sys.executable} {ROOT / 'tests' / 'fault_server.py'} --tokens 16 --itl 0.01 --stall-after 8 "
              f"--log-error '{OOM_LINE}'")
    proc = _loadgen("run", "--backend", "lightllm", "--endpoint", "completions", "--model", "7b", "--engine-cmd",
                    engine, "--concurrency", "2", "--num-requests", str(ASKED), "--stall-timeout", "2",
                    "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    info, _ = _check_stalled(out, 9)
    quote = info["server_log_error"]
    assert quote.startswith("ERROR 12-02 07:37:04 [model_rpc.py:215] Batch decode encountered an unexpected "
                            "ERROR: CUDA out of memory.") and quote.endswith("...") and len(quote) == 303
    lines = proc.stderr.strip().splitlines()
    assert lines[-2].startswith("loadgen: run stopped early: the server stalled")
    assert lines[-1] == f"server.log: {quote}"


def test_a_sweep_ends_at_the_point_whose_server_stalled(tmp_path, start_fault_server):
    server = start_fault_server("--tokens", "16", "--itl", "0.01", "--stall-after", "14")
    out = tmp_path / "sweep"
    proc = _loadgen("sweep", "--url", server.url, "--concurrency", "2,4,8", "--num-requests", "10",
                    "--stall-timeout", "2", "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    assert [p["label"] for p in sweep["points"]] == ["concurrency 2", "concurrency 4"]
    assert sweep["stalled_at"] == "concurrency 4"
    first = json.loads((out / "concurrency-2" / "run.json").read_text())
    assert first["status"] == "finished" and len(_records(out / "concurrency-2")) == 10
    _check_stalled(out / "concurrency-4", server.log()["served"])
    assert not (out / "concurrency-8").exists()  # never run against a server that stopped answering
    assert ("loadgen: error: sweep stopped at point concurrency 4: the server stalled: no byte on any of 4 "
            "requests in flight for 2 s (later points were not run") in proc.stderr


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_bad_stall_timeout_is_refused_in_one_line(value):
    proc = subprocess.run([sys.executable, "-m", "loadgen", "run", f"--stall-timeout={value}", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"loadgen: error: --stall-timeout: {value!r} is not a duration: give one such as "
                                   "60s or 2m, or 0 (off) for none")


def test_an_error_limit_on_a_launched_server_quotes_its_log_too(tmp_path):
    """Not only a stall: a run against a launched server that an error limit stops says what the server said."""
    out = tmp_path / "r"
    engine = (f"{sys.executable} {ROOT / 'tests' / 'fault_server.py'} --mix http500 --stall-after 0 "
              f"--log-error 'CRITICAL engine core died: RuntimeError: NCCL error'")
    proc = _loadgen("run", "--backend", "vllm", "--model", "7b", "--engine-cmd", engine, "--concurrency", "2",
                    "--num-requests", str(ASKED), "--max-errors", "3", "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "stopped_early" and info["stalled"] is False and "--max-errors 3" in info["stopped_early"]
    assert info["server_log_error"] == "CRITICAL engine core died: RuntimeError: NCCL error"
    assert proc.stderr.strip().splitlines()[-1] == "server.log: CRITICAL engine core died: RuntimeError: NCCL error"


def test_the_quoted_line_is_the_last_with_an_error_level(tmp_path):
    from loadgen.run_json import server_log_error

    log = tmp_path / "server.log"
    log.write_text("INFO 12-02 07:30:00 [api_server.py:1] ready\nERROR 12-02 07:36:00 an older error\n"
                   "\x1b[31mERROR\x1b[0m 12-02 07:37:04 [model_rpc.py:215] Batch decode encountered an unexpected "
                   "ERROR: CUDA out of memory.\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "torch.OutOfMemoryError: CUDA out of memory.\nINFO 12-02 07:37:05 [manager.py:9] waiting\n")
    assert server_log_error(log) == ("ERROR 12-02 07:37:04 [model_rpc.py:215] Batch decode encountered an "
                                     "unexpected ERROR: CUDA out of memory.")
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad config\nbye\n")
    assert server_log_error(log) == "ValueError: bad config"  # no levels: a traceback's last line
    log.write_text("INFO all good\n")
    assert server_log_error(log) is None and server_log_error(tmp_path / "missing.log") is None
