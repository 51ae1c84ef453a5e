"""`loadgen` as a user runs it: a real subprocess, a real sim process, real files."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, gone, run_loadgen

SUMMARY_KEYS = {"requests", "throughput", "ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "lateness_ms", "simulated"}
DIST_KEYS = {"mean", "std", "min", "p50", "p90", "p95", "p99", "p999", "max"}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _sim_processes(run_dir: Path) -> list[int]:
    """PIDs of sim processes launched for this run directory's server log (none should survive)."""
    out = subprocess.run(["pgrep", "-f", "backends.sim"], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if int(p) != os.getpid()]


@pytest.mark.slow
def test_run_with_defaults(tmp_path):
    """Exactly the README's quick start: `loadgen run`, no flags (the default run directory is relative to cwd)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "loadgen", "run"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)})
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    print(f"`loadgen run` with defaults took {took:.1f} s")
    run_dirs = list((tmp_path / "results").iterdir())
    assert len(run_dirs) == 1 and "sim" in run_dirs[0].name
    run_dir = run_dirs[0]
    records = _read_jsonl(run_dir / "requests.jsonl")
    assert len(records) == 100 and len({r["index"] for r in records}) == 100
    assert all(r["status"] == "ok" and r["output_tokens"] == 128 for r in records)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["simulated"] is True
    assert set(summary["requests"]) >= {"completed", "failed", "timed_out"}
    assert set(summary["throughput"]) == {"requests_per_s", "output_tokens_per_s", "total_tokens_per_s"}
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
        assert DIST_KEYS <= set(summary[key]) and summary[key]["p50"] > 0
    assert set(summary["lateness_ms"]) == {"p50", "p99", "max"}
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished" and run["backend"]["simulated"] is True
    assert run["backend"]["launch_command"][1:3] == ["-m", "backends.sim"]
    assert "SIMULATED" in proc.stdout and "TTFT (ms)" in proc.stdout and str(run_dir.name) in proc.stdout
    assert gone(run["backend"]["pid"])  # the launched engine (by its pid: other sims may run on this machine)


def test_run_flags_json_slo_closed_loop(tmp_path):
    out = tmp_path / "run"
    proc = run_loadgen("run", "--backend", "sim", "--model", "70b", "--gpus", "8", "--gpu", "h100",
                       "--concurrency", "8", "--num-requests", "24", "--warmup", "4", "--input-len", "uniform:100,300",
                       "--output-len", "normal:40,10", "--slo", "ttft:10s,tpot:1s", "--endpoint", "chat",
                       "--output", str(out), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["requests"]["completed"] == 24 and summary["requests"]["warmup"] == 4
    assert summary["goodput"]["fraction"] == 1.0 and summary["lateness_ms"] is None
    records = _read_jsonl(out / "requests.jsonl")
    assert [r["phase"] for r in records].count("warmup") == 4 and len(records) == 28
    assert all(r["output_tokens"] == r["target_output_tokens"] for r in records)
    run = json.loads((out / "run.json").read_text())
    assert run["load"]["mode"] == "closed" and run["gpus"] == 8 and run["model"] == "llama-2-70b"


def test_url_target_and_api_key_never_written(tmp_path, start_sim):
    sim = start_sim("--model", "tiny", "--gpu", "rtx3090", "--served-model-name", "my-model")
    out = tmp_path / "run"
    proc = run_loadgen("run", "--url", sim.url, "--qps", "50", "--num-requests", "20", "--input-len", "64",
                       "--output-len", "8", "--output", str(out), "--api-key", "sk-secret-123", "--quiet")
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "my-model"  # taken from /v1/models
    assert run["backend"]["simulated"] is True  # attached by URL, but the server identifies itself as the sim
    for f in out.iterdir():
        assert "sk-secret-123" not in f.read_text()
    assert len(_read_jsonl(out / "requests.jsonl")) == 20


def test_ctrl_c_keeps_measurements_and_stops_the_engine(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", "run", "--qps", "20", "--num-requests", "2000",
                             "--output-len", "64", "--output", str(out), "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (out / "requests.jsonl").exists() and len((out / "requests.jsonl").read_text().splitlines()) >= 10:
            break
        time.sleep(0.2)
    run = json.loads((out / "run.json").read_text())
    sim_pid = None
    for pid in _sim_processes(out):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if run["backend"]["url"].rsplit(":", 1)[1].encode() in cmd:
            sim_pid = pid
    assert sim_pid is not None
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    records = _read_jsonl(out / "requests.jsonl")
    statuses = {r["status"] for r in records}
    assert statuses <= {"ok", "cancelled"} and "ok" in statuses
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["requests"]["total"] == len(records)
    assert summary["requests"]["completed"] + summary["requests"]["cancelled"] == len(records)
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert gone(sim_pid)


def test_help_documents_units_and_every_command():
    out = run_loadgen("run", "--help").stdout
    for flag in ("--qps", "--concurrency", "--duration", "--warmup", "--slo", "--timeout", "--input-len",
                 "--output-len", "--tokenizer", "--endpoint", "--api-key", "--gpus", "--json", "--output"):
        assert flag in out
    assert "requests per second" in out and "e.g. 30s" in out
    top = run_loadgen("--help").stdout
    assert "run" in top and "serve-sim" in top and "catalog" in top
    assert "llama-2-70b" in run_loadgen("catalog").stdout


def test_serve_sim_standalone(tmp_path):
    from backends.process import find_free_port
    from conftest import wait_http

    port = find_free_port()
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", "serve-sim", "--model", "13b", "--gpu", "a100",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        r = run_loadgen("run", "--url", f"http://127.0.0.1:{port}", "--num-requests", "5", "--qps", "20",
                        "--output-len", "4", "--output", str(tmp_path / "r"), "--quiet")
        assert r.returncode == 0, r.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert "SIMULATED llama-2-13b" in proc.stdout.read()
    busy = subprocess.Popen([sys.executable, "-m", "loadgen", "serve-sim", "--port", str(port)], cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        clash = run_loadgen("serve-sim", "--port", str(port), timeout=30)
        assert clash.returncode == 2 and "choose another --port" in clash.stderr
    finally:
        busy.terminate()
        busy.wait(timeout=10)


def test_console_header_says_what_was_measured(tmp_path):
    proc = run_loadgen("run", "--model", "70b", "--gpus", "8", "--qps", "20", "--num-requests", "4", "--input-len",
                       "64", "--output-len", "4", "--output", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("measured: llama-2-70b on 8x h100-sxm (SIMULATED), backend sim")
    assert "input fixed:64 / output fixed:4 tokens" in first and "poisson arrivals at 20 req/s, 4 requests" in first


def test_conversation_progress_counts_turns_without_a_total_of_conversations(tmp_path):
    """--num-requests counts conversations; the bar advances per turn, so it must not show turns over
    conversations (the old bar reached 100% at a quarter of the work, then read 121/...)."""
    proc = run_loadgen("run", "--turns", "3", "--num-requests", "3", "--concurrency", "2", "--input-len", "20",
                       "--output-len", "4", "--output", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert "3 conversations" in proc.stderr and "9turn" in proc.stderr
    assert not re.search(r"\b\d+/3\b", proc.stderr)
    assert "3 conversations" in proc.stdout.splitlines()[0]


def test_catalog_prints_a_tiny_model_in_millions():
    out = run_loadgen("catalog").stdout
    tiny = next(line for line in out.splitlines() if line.startswith("tiny "))
    assert "2.6M" in tiny and "0.00B" not in out


def test_sweep_table_latency_columns_carry_units(tmp_path):
    proc = run_loadgen("sweep", "--qps", "20", "--num-requests", "3", "--input-len", "16", "--output-len", "4",
                       "--output", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    for column in ("TTFT p50 (ms)", "TTFT p99 (ms)", "TPOT p50 (ms)", "TPOT p99 (ms)", "E2EL p50 (ms)"):
        assert column in proc.stdout
    assert "point 1/1 (qps 20): sends for about 0 s" in proc.stderr  # each point announces itself and its length


def test_one_sweep_runs_open_and_closed_loop_points_against_one_server(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "s"
    proc = run_loadgen("sweep", "--concurrency", "2", "--qps", "20,10", "--num-requests", "6", "--input-len", "16",
                       "--output-len", "4", "--report", "--output", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    assert [p["label"] for p in sweep["points"]] == ["qps 20", "qps 10", "concurrency 2"]  # open loops first
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "plots") == [
        "concurrency-2", "qps-10", "qps-20"]
    assert json.loads((out / "concurrency-2" / "run.json").read_text())["load"]["concurrency"] == 2
    # each point its own prompt text, in the order the points ran (a prefix cache must not carry over)
    streams = {name: json.loads((out / name / "run.json").read_text())["workload"].get("prompt_stream", 0)
               for name in ("qps-20", "qps-10", "concurrency-2")}
    assert streams == {"qps-20": 0, "qps-10": 1, "concurrency-2": 2}
    rows = [line.split()[0:2] for line in proc.stdout.splitlines() if line.startswith(("qps", "concurrency"))]
    assert rows == [["qps", "10"], ["qps", "20"], ["concurrency", "2"]]  # the table: by rate, then by users
    assert (out / "report.html").stat().st_size > 0 and (out / "plots" / "throughput.png").exists()


def test_report_without_matplotlib_fails_before_the_run(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "matplotlib.py").write_text("raise ImportError('hidden for this test')\n")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "loadgen", "run", "--report", "--num-requests", "5000", "--output",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)])})
    assert proc.returncode == 2 and "--report needs matplotlib" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()  # nothing ran, nothing was created


def test_interrupted_make_model_leaves_no_partial_directory(tmp_path):
    out = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", "make-model", "--model", "7b", "--output", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # the slow step announces itself before it starts
    assert "training the tokenizer (32,000 ids" in line
    assert out.exists()  # config.json is already written
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130 and not out.exists()
    again = run_loadgen("make-model", "--model", "tiny", "--output", str(out))  # the retry is not blocked
    assert again.returncode == 0, again.stderr


SUBCOMMANDS = ("run", "sweep", "report", "compare", "locust", "gpu-sample", "scenarios", "serve-sim", "catalog",
               "make-model", "engine-wheels")


def test_every_subcommand_has_help_text_and_there_is_a_version():
    top = run_loadgen("--help").stdout
    for cmd in SUBCOMMANDS:
        assert cmd in top
        text = run_loadgen(cmd, "--help").stdout
        description = text.split("\n\n")[1]  # after the usage block
        assert not description.lstrip().startswith(("positional", "options")), f"{cmd} has no description"
    version = run_loadgen("--version")
    assert version.returncode == 0 and version.stdout.startswith("loadgen (dissect) ")


def test_one_set_of_flag_names_with_the_old_ones_hidden():
    shown = {cmd: run_loadgen(cmd, "--help").stdout for cmd in ("make-model", "engine-wheels", "gpu-sample", "compare",
                                                                "locust")}
    for cmd, text in shown.items():
        assert "--output" in text and "--out " not in text and "--html" not in text, cmd
    assert "--concurrency" in shown["locust"] and "--duration" in shown["locust"]
    assert "--users" not in shown["locust"] and "--run-time" not in shown["locust"]
    assert "--gpu-sample-interval" in shown["gpu-sample"] and "--interval" not in shown["gpu-sample"]
    missing = run_loadgen("make-model", "--model", "tiny")
    assert missing.returncode == 2 and "--output DIR is required" in missing.stderr
