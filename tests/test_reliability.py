"""Faults, limits and shutdown: every sent request is recorded once, nothing crashes, nothing is left running."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, gone, read_requests, run_loadgen

ALL_FAULTS = "ok:4,slow:1,http500:1,http429:1,cut:1,malformed:1,stall:1,empty:1,reset:1"


def _wait_records(path: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.1)
    raise TimeoutError(f"fewer than {n} records in {path}")


def test_every_fault_is_recorded_with_its_status(tmp_path, start_fault_server):
    server = start_fault_server("--mix", ALL_FAULTS, "--tokens", "8", "--slow-first", "0.3")
    out = tmp_path / "run"
    proc = run_loadgen("run", "--url", server.url, "--qps", "40", "--num-requests", "72", "--idle-timeout", "1s",
                       "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    served = Counter(server.log()["counts"])
    assert sum(served.values()) == 72
    records = read_requests(out / "requests.jsonl")
    assert sorted(r["index"] for r in records) == list(range(72))  # every sent request, exactly once
    status = Counter(r["status"] for r in records)
    assert status["ok"] == served["ok"] + served["slow"]
    assert status["timeout"] == served["stall"]
    assert status["error:empty"] == served["empty"]
    assert status["error:stream"] == served["cut"] + served["malformed"]
    assert status["error:connection"] == served["reset"]
    http = [r for r in records if r["status"] == "error:http"]
    assert Counter(r["http_status"] for r in http) == {500: served["http500"], 429: served["http429"]}
    assert all("Retry-After: 2" in r["error"] for r in http if r["http_status"] == 429)
    assert all(r["error"].startswith("idle") for r in records if r["status"] == "timeout")
    malformed = [r for r in records if r["status"] == "error:stream" and "malformed" in r["error"]]
    assert len(malformed) == served["malformed"] and all(len(r["token_times_ms"]) == 8 for r in malformed)
    slow_ok = [r for r in records if r["status"] == "ok" and r["token_times_ms"][0] > 250]
    assert len(slow_ok) == served["slow"]
    summary = json.loads((out / "summary.json").read_text())
    req = summary["requests"]
    assert req["completed"] + req["failed"] + req["timed_out"] + req["cancelled"] == req["total"] == 72
    # the console names each error kind with its rate
    for kind in ("error:http", "error:stream", "error:empty", "error:connection"):
        assert kind in proc.stdout
    assert "%" in proc.stdout


def test_server_killed_mid_run(tmp_path, start_fault_server):
    server = start_fault_server("--mix", "ok", "--tokens", "20", "--itl", "0.01")
    out = tmp_path / "run"
    loadgen = subprocess.Popen([sys.executable, "-m", "loadgen", "run", "--url", server.url, "--qps", "20",
                                "--num-requests", "60", "--output", str(out), "--quiet"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_records(out / "requests.jsonl", 10)
    server.proc.kill()
    _, stderr = loadgen.communicate(timeout=60)
    assert loadgen.returncode == 0 and "Traceback" not in stderr
    records = read_requests(out / "requests.jsonl")
    assert sorted(r["index"] for r in records) == list(range(60))
    status = Counter(r["status"] for r in records)
    assert status["ok"] >= 10 and status["error:connection"] > 0
    assert set(status) <= {"ok", "error:connection", "error:stream"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["total"] == 60 and summary["requests"]["failed"] == 60 - status["ok"]


def test_server_killed_and_restarted_mid_run(tmp_path, start_fault_server):
    """The server dies and comes back on the same port: requests meanwhile fail to connect, later ones succeed
    again on fresh connections, every request is recorded once, and every answered one was counted by a server."""
    from conftest import wait_http

    first = start_fault_server("--mix", "ok", "--tokens", "10", "--itl", "0.01")
    out = tmp_path / "run"
    loadgen = subprocess.Popen([sys.executable, "-m", "loadgen", "run", "--url", first.url, "--qps", "20",
                                "--num-requests", "160", "--output", str(out), "--quiet"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        _wait_records(out / "requests.jsonl", 20)
        served_before = first.log()["served"]
        first.proc.kill()
        first.proc.wait(timeout=10)
        time.sleep(1.0)  # requests sent now find nobody
        second = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fault_server.py"), "--mix", "ok",
                                   "--tokens", "10", "--itl", "0.01", "--port", str(first.port)], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_http(first.url + "/health")
        _, stderr = loadgen.communicate(timeout=120)
        with urllib.request.urlopen(first.url + "/fault/log", timeout=10) as resp:
            served_after = json.loads(resp.read())["served"]
    finally:
        if loadgen.poll() is None:
            loadgen.kill()
        if second is not None:
            second.terminate()
            second.wait(timeout=10)
    assert loadgen.returncode == 0 and "Traceback" not in stderr, stderr
    records = read_requests(out / "requests.jsonl")
    assert sorted(r["index"] for r in records) == list(range(160))  # each request once
    status = Counter(r["status"] for r in records)
    assert status["error:connection"] > 0 and set(status) <= {"ok", "error:connection", "error:stream"}
    assert served_after > 0 and status["ok"] >= 20 + 1
    answered = sum(1 for r in records if r["http_status"] is not None)
    # every request a server counted has an answered record; only those reaching the first server between its
    # log read and its kill (a few at 20 req/s) are counted by neither read
    assert served_before + served_after <= answered <= served_before + served_after + 5
    assert json.loads((out / "summary.json").read_text())["requests"]["total"] == 160


def test_max_errors_stops_early_and_keeps_what_was_measured(tmp_path, start_fault_server):
    server = start_fault_server("--mix", "ok:1,http500:3")
    out = tmp_path / "run"
    proc = run_loadgen("run", "--url", server.url, "--qps", "50", "--num-requests", "400", "--max-errors", "10",
                       "--output", str(out), "--quiet")
    assert proc.returncode == 1
    assert "stopped early" in proc.stderr and "--max-errors 10" in proc.stderr and "Traceback" not in proc.stderr
    records = read_requests(out / "requests.jsonl")
    assert 11 <= len(records) < 400
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] and summary["requests"]["total"] == len(records)
    assert json.loads((out / "run.json").read_text())["status"] == "stopped_early"


def test_max_error_rate(tmp_path, start_fault_server):
    server = start_fault_server("--mix", "ok:1,http500:1")
    out = tmp_path / "run"
    proc = run_loadgen("run", "--url", server.url, "--qps", "100", "--num-requests", "500",
                       "--max-error-rate", "0.3", "--output", str(out), "--quiet")
    assert proc.returncode == 1 and "--max-error-rate 0.3" in proc.stderr
    assert 20 <= len(read_requests(out / "requests.jsonl")) < 500


def test_total_timeout(tmp_path, start_fault_server):
    server = start_fault_server("--mix", "stall")
    out = tmp_path / "run"
    proc = run_loadgen("run", "--url", server.url, "--qps", "20", "--num-requests", "4", "--timeout", "500ms",
                       "--output", str(out), "--quiet")
    assert proc.returncode == 1 and "every request failed (4 of 4" in proc.stderr  # nothing measured
    records = read_requests(out / "requests.jsonl")
    assert [r["status"] for r in records] == ["timeout"] * 4
    assert all("within 0.5 s" in r["error"] and 0.45 < r["finished_s"] - r["sent_s"] < 60 for r in records)  # the stall lasts 3600 s


def _launched_sim_pid(out: Path) -> int:
    # run.json's pid, not `pgrep -f "--port N"`: that also matched another sim on the machine whose port starts
    # with N's digits, and the test then waited for the wrong process to go
    return json.loads((out / "run.json").read_text())["backend"]["pid"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_cancels_in_flight_and_stops_the_engine(tmp_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", "run", "--qps", "30", "--num-requests", "3000",
                             "--output-len", "256", "--output", str(out), "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_records(out / "requests.jsonl", 5)
    sim_pid = _launched_sim_pid(out)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr
    records = read_requests(out / "requests.jsonl")
    status = Counter(r["status"] for r in records)
    assert status["cancelled"] > 0 and set(status) <= {"ok", "cancelled"}
    assert len({r["index"] for r in records}) == len(records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["requests"]["cancelled"] == status["cancelled"]
    assert gone(sim_pid)


def test_second_ctrl_c_forces_exit_and_still_kills_the_engine(tmp_path, start_fault_server):
    """The first Ctrl-C waits for in-flight requests to be cancelled; here they are stuck in a stalled
    server, so a second Ctrl-C must exit at once — and must not leave the launched engine behind."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", "run", "--qps", "50", "--num-requests", "3000",
                             "--output-len", "512", "--output", str(out), "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_records(out / "requests.jsonl", 3)
    sim_pid = _launched_sim_pid(out)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert gone(sim_pid)
    assert read_requests(out / "requests.jsonl")  # what finished before is still on disk


def test_launch_failure_leaves_nothing_behind(tmp_path):
    """A sim that cannot be ready in time: one-line error naming the log, and no process left."""
    out = tmp_path / "run"
    proc = run_loadgen("run", "--startup-timeout", "1ms", "--output", str(out), "--num-requests", "1")
    assert proc.returncode == 2
    first = proc.stderr.strip().splitlines()[0]
    assert "not ready" in first and "server.log" in first and "--startup-timeout" in first
    port = re.search(r"127\.0\.0\.1:(\d+)/health", first).group(1)

    def ours() -> list[str]:  # by its port: other sims may run on this machine meanwhile
        found = subprocess.run(["pgrep", "-f", f"backends.sim .*--port {port}( |$)"], capture_output=True, text=True)
        return found.stdout.split()

    assert gone(*ours())
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


def test_api_key_never_leaves_the_process(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OPENAI_API_KEY": "sk-env-SECRET-456"}
    proc = subprocess.run([sys.executable, "-m", "loadgen", "run", "--num-requests", "5", "--qps", "50",
                           "--output-len", "4", "--api-key", "sk-flag-SECRET-123", "--output", str(out), "--json"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    texts = [proc.stdout, proc.stderr] + [f.read_text() for f in out.iterdir() if f.is_file()]
    for text in texts:
        assert "SECRET" not in text
    run = json.loads((out / "run.json").read_text())
    assert run["api_key_given"] is True and "***" in run["environment"]["command"]
    argv = run["backend"]["launch_command"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"  # the engine listens on loopback only


@pytest.mark.slow
def test_soak_memory_stays_flat(tmp_path, start_fault_server):
    """Thousands of requests with a fault mix: loadgen's resident memory must not grow with the request count."""
    server = start_fault_server("--mix", "ok:8,http500:1,cut:1,empty:1,reset:1", "--tokens", "4", "--itl", "0.001")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", "run", "--url", server.url, "--qps", "150",
                             "--num-requests", "4000", "--output", str(out), "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def rss_mib() -> float:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    samples = []
    while proc.poll() is None:
        n = len((out / "requests.jsonl").read_text().splitlines()) if (out / "requests.jsonl").exists() else 0
        try:
            samples.append((n, rss_mib()))
        except (FileNotFoundError, AssertionError, ProcessLookupError):
            break
        time.sleep(0.5)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert len(read_requests(out / "requests.jsonl")) == 4000
    early = next(rss for n, rss in samples if n >= 800)
    late = max(rss for n, rss in samples if n >= 800)
    print(f"loadgen RSS after 800 requests {early:.1f} MiB, peak after {late:.1f} MiB ({len(samples)} samples)")
    assert late - early < 10, samples  # 3,200 more requests: no per-request growth


def test_run_json_says_whether_the_tree_was_edited_since_its_commit(tmp_path):
    """git_sha alone would credit a run from an edited checkout to a commit it did not run."""
    import subprocess

    from scenarios.provenance import git_dirty, git_sha

    assert git_sha(tmp_path) is None and git_dirty(tmp_path) is None  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    assert len(git_sha(tmp_path) or "") == 40 and git_dirty(tmp_path) is False
    (tmp_path / "notes.txt").write_text("untracked files are not the code that ran\n")
    assert git_dirty(tmp_path) is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_dirty(tmp_path) is True
