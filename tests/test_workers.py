"""`--workers N`: the load split over client processes that share one clock origin and stream records back."""

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, read_requests, run_loadgen
from loadgen.load import LoadPlan
from loadgen.load.arrivals import ArrivalProcess
from loadgen.load.processes import choose_workers, client_summary, on_this_host, split_evenly


def _truth(url: str) -> dict[str, dict]:
    return {g["id"]: g for g in json.loads(urllib.request.urlopen(url + "/sim/requests").read())["requests"]}


def test_open_loop_workers_send_the_same_schedule_on_one_clock(tmp_path, start_sim):
    """Two workers send exactly the requests one process sends, at the same offsets; every client stamp lies on
    the server's side of the same CLOCK_MONOTONIC (a worker with its own origin would be off by its start-up)."""
    sim = start_sim("--fixed-ttft", "5ms", "--fixed-itl", "2ms")
    common = ["--url", sim.url, "--qps", "80", "--num-requests", "60", "--warmup", "4", "--input-len", "16",
              "--output-len", "uniform:4,12", "--seed", "7", "--quiet"]
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        proc = run_loadgen("run", *common, "--workers", str(workers), "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        runs[workers] = out
    one, two = read_requests(runs[1]), read_requests(runs[2])
    key = lambda r: (r["index"], r["phase"], round(r["scheduled_s"], 9), r["target_output_tokens"])  # noqa: E731
    assert sorted(map(key, one)) == sorted(map(key, two)) and len(two) == 64
    assert Counter(r["worker"] for r in two) == {0: 32, 1: 32}
    assert json.loads((runs[2] / "run.json").read_text())["load"]["workers"] == 2
    origin = json.loads((runs[2] / "run.json").read_text())["origin_perf_counter_ns"]
    truth = _truth(sim.url)
    for r in two:
        g = truth[r["response_id"]]
        assert r["status"] == "ok" and r["sent_s"] >= r["scheduled_s"]
        assert origin + r["sent_s"] * 1e9 <= g["received_ns"]  # sent before the server received it
        assert origin + r["first_token_s"] * 1e9 >= g["first_token_ns"]  # read after the server wrote it
    client = json.loads((runs[2] / "summary.json").read_text())["client"]
    assert client["processes"] == 3 and [w["worker"] for w in client["workers"]] == [0, 1]


def test_closed_loop_workers_split_the_users(tmp_path, start_sim):
    """5 users over 2 workers (3 + 2): never more than 5 requests in flight, every request once, warm-up first."""
    sim = start_sim("--fixed-ttft", "5ms", "--fixed-itl", "2ms")
    out = tmp_path / "r"
    proc = run_loadgen("run", "--url", sim.url, "--concurrency", "5", "--num-requests", "30", "--warmup", "3",
                       "--input-len", "16", "--output-len", "8", "--workers", "2", "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    records = read_requests(out)
    assert sorted(r["index"] for r in records) == list(range(33))
    assert Counter(r["phase"] for r in records) == {"warmup": 3, "measured": 30}
    assert {r["index"] for r in records if r["phase"] == "warmup"} == {0, 1, 2}
    events = sorted([(r["sent_s"], 1) for r in records] + [(r["finished_s"], -1) for r in records])
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    assert peak <= 5
    assert {r["worker"] for r in records} == {0, 1}


def test_ctrl_c_stops_every_worker_and_keeps_the_records(tmp_path, start_sim):
    sim = start_sim("--fixed-ttft", "5ms", "--fixed-itl", "20ms")
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", "run", "--url", sim.url, "--qps", "40",
                             "--num-requests", "5000", "--output-len", "100", "--input-len", "16", "--workers", "2",
                             "--output", str(out), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (out / "requests.jsonl").exists() and len((out / "requests.jsonl").read_text().splitlines()) >= 5:
            break
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "loadgen.load.worker"], capture_output=True,
                             text=True).stdout.split()
    assert len(workers) >= 2
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr
    records = read_requests(out)
    status = Counter(r["status"] for r in records)
    assert status["cancelled"] > 0 and set(status) <= {"ok", "cancelled"}
    assert len({r["index"] for r in records}) == len(records)
    assert json.loads((out / "summary.json").read_text())["interrupted"]
    deadline = time.monotonic() + 30  # a busy machine may take a while to reap them; gone is what counts
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_error_limit_stops_all_workers(tmp_path, start_fault_server):
    server = start_fault_server("--mix", "http500", "--tokens", "4")
    out = tmp_path / "r"
    proc = run_loadgen("run", "--url", server.url, "--qps", "50", "--num-requests", "400", "--max-errors", "5",
                       "--workers", "2", "--output", str(out), "--quiet")
    assert proc.returncode == 1 and "stopped early" in proc.stderr
    assert 6 <= len(read_requests(out)) < 400


def test_auto_workers_one_per_needed_core_and_never_beside_a_local_server():
    closed = LoadPlan(concurrency=300)
    assert choose_workers("auto", closed, cores=8, target_on_this_host=False) == 3
    assert choose_workers("auto", closed, cores=2, target_on_this_host=False) == 2
    assert choose_workers("auto", closed, cores=8, target_on_this_host=True) == 1
    assert choose_workers("auto", LoadPlan(concurrency=16), cores=8, target_on_this_host=False) == 1
    assert choose_workers("auto", LoadPlan(arrival=ArrivalProcess("poisson", 250.0)), 16, False) == 3
    assert choose_workers(4, closed, cores=2, target_on_this_host=True) == 4
    assert on_this_host("http://127.0.0.1:8000") and on_this_host("http://localhost:1")
    assert not on_this_host("http://10.1.2.3:8000")
    assert split_evenly(5, 2) == [3, 2] and split_evenly(4, 4) == [1, 1, 1, 1]


def test_client_cpu_counts_every_process_and_names_the_busiest():
    s = client_summary((0.2, 10.0), [{"worker": 0, "cpu_s": 9.5, "wall_s": 10.0}, {"worker": 1, "cpu_s": 3.0,
                                                                                     "wall_s": 10.0}])
    assert s["cpu_s"] == pytest.approx(12.7) and s["busiest_process_cpu_s"] == 9.5 and s["processes"] == 3
    assert s["cpu_fraction_of_one_core"] == pytest.approx(0.95)


def test_bad_workers_value_is_one_line():
    proc = run_loadgen("run", "--workers", "many")
    assert proc.returncode == 2 and "--workers" in proc.stderr and "positive integer or auto" in proc.stderr
    assert "Traceback" not in proc.stderr
