"""Scenario files, trace replay, sweeps and the saturation search, end to end against the sim."""

import asyncio
import json

import numpy as np
import pytest

from conftest import read_requests, run_loadgen
from loadgen.config import list_scenarios, load_scenario
from loadgen.sweep import find_max_rate
from loadgen.workload.datasets import load_dataset, trace_offsets
from scenarios.catalog import CatalogError
from scenarios.scenario import DATA_DIR

SHIPPED = {"chat", "summarize", "codegen", "prefix-heavy", "paper-7b", "paper-13b", "paper-70b"}


def test_shipped_scenarios_load_and_list():
    assert {s.name for s in list_scenarios()} >= SHIPPED
    paper = load_scenario("paper-70b")
    assert paper.data["model"] == "70b" and paper.data["gpus"] == 8 and paper.section("load_points")["qps"]
    out = run_loadgen("scenarios")
    assert out.returncode == 0 and all(name in out.stdout for name in SHIPPED)
    show = run_loadgen("scenarios", "show", "codegen")
    assert show.returncode == 0 and "name: codegen" in show.stdout


@pytest.mark.parametrize("text,needle", [
    ("name: x\nversion: 1\ndescription: d\ncolour: red\n", "unknown field 'colour'"),
    ("name: x\nversion: 1\ndescription: d\nworkload:\n  input_len: [1]\n", "field 'workload.input_len' must be"),
    ("name: x\nversion: one\ndescription: d\n", "field 'version' must be integer"),
    ("name: x\nversion: 1\n", "missing field(s) description"),
    ("name: x\nversion: 1\ndescription: d\narrival:\n  kind: sometimes\n", "field 'arrival.kind' must be one of"),
    ("name: x\nversion: 1\ndescription: d\narrival: {qps: -2}\n", "field 'arrival.qps' must not be negative"),
    ("name: [x\n", "not valid YAML at line"),
    ("name: x\nversion: 1\ndescription: d\nload_points:\n  qps: []\n", "load_points.qps"),
])
def test_invalid_scenario_files_name_the_field(tmp_path, text, needle):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(CatalogError) as err:
        load_scenario(str(p))
    assert needle in str(err.value)
    cli = run_loadgen("run", "--scenario", str(p), "--output", str(tmp_path / "r"))
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1 and needle in cli.stderr


def test_bad_scenario_values_name_the_field(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nversion: 1\ndescription: d\nworkload:\n  input_len: gauss:1\n")
    cli = run_loadgen("run", "--scenario", str(p), "--output", str(tmp_path / "r"))
    assert cli.returncode == 2 and "--input-len" in cli.stderr and "unknown distribution" in cli.stderr
    p.write_text("name: x\nversion: 1\ndescription: d\nduration: forever\n")
    cli = run_loadgen("run", "--scenario", str(p), "--output", str(tmp_path / "r2"))
    assert cli.returncode == 2 and "field 'duration'" in cli.stderr
    assert run_loadgen("run", "--scenario", "no-such", "--output", str(tmp_path / "r3")).returncode == 2


def test_scenario_run_with_flag_overrides(tmp_path):
    out = tmp_path / "run"
    proc = run_loadgen("run", "--scenario", "codegen", "--num-requests", "6", "--output-len", "16", "--qps", "30",
                       "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["scenario"] == "codegen" and run["workload"]["output_len"] == "fixed:16"  # flag wins
    assert run["workload"]["input_len"] == "uniform:50,150"  # scenario field kept
    assert run["load"]["qps"] == 30 and run["load"]["num_requests"] == 6
    assert all(r["output_tokens"] == 16 and 50 <= r["input_tokens"] <= 150 for r in read_requests(out / "requests.jsonl"))


def test_prefix_scenario_shares_system_prompts(tmp_path):
    out = tmp_path / "run"
    proc = run_loadgen("run", "--scenario", "prefix-heavy", "--num-requests", "12", "--qps", "40",
                       "--output-len", "4", "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["workload"]["prefix_groups"] == 8 and run["workload"]["prefix_len"] == 1024
    assert all(r["input_tokens"] >= 1024 + 32 for r in read_requests(out / "requests.jsonl"))


def test_trace_replay_sends_on_the_scaled_timestamps(tmp_path):
    out = tmp_path / "run"
    proc = run_loadgen("run", "--dataset", "burstgpt-sample.csv", "--arrival", "trace", "--time-scale", "0.25",
                       "--output-len", "8", "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    records = sorted(read_requests(out / "requests.jsonl"), key=lambda r: r["index"])
    expected = trace_offsets(load_dataset(DATA_DIR / "burstgpt-sample.csv").records, 0.25)
    assert len(records) == len(expected) == 60
    assert np.allclose([r["scheduled_s"] for r in records], expected)
    lateness = np.array([(r["sent_s"] - r["scheduled_s"]) * 1e3 for r in records])
    assert lateness.min() >= 0  # never early; how late is this machine's speed: benchmarks/client_accuracy.py
    assert json.loads((out / "run.json").read_text())["load"]["arrival"] == "trace"


def test_multi_turn_sends_each_turn_after_the_previous(tmp_path):
    out = tmp_path / "run"
    proc = run_loadgen("run", "--dataset", "sharegpt-sample.json", "--multi-turn", "--num-requests", "12",
                       "--concurrency", "4", "--output-len", "8", "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    records = {r["index"]: r for r in read_requests(out / "requests.jsonl")}
    assert len(records) > 12  # conversations with several turns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["completed"] == len(records)


def test_find_max_rate_brackets_a_threshold():
    tried = []

    async def evaluate(rate):
        tried.append(rate)
        return rate <= 37.0

    result = asyncio.run(find_max_rate(evaluate, start=1.0, max_rate=1000, precision=0.02))
    assert result["converged"] and 37.0 * 0.98 <= result["highest_meeting"] <= 37.0 < result["lowest_failing"]
    assert tried[:7] == [1, 2, 4, 8, 16, 32, 64]
    low = asyncio.run(find_max_rate(lambda r: asyncio.sleep(0, r <= 0.3), start=4, max_rate=100, precision=0.05))
    assert 0.285 <= low["highest_meeting"] <= 0.3
    never = asyncio.run(find_max_rate(lambda r: asyncio.sleep(0, False), start=4, max_rate=100))
    assert never["highest_meeting"] is None


@pytest.mark.slow
def test_sweep_points_and_until_slo_against_a_fine_sweep(tmp_path, start_sim):
    """One sim without batching (max 1 sequence) serves a 64-in/8-out request in ~48 ms (about 21 req/s at most);
    with its 10 ms request overhead, TTFT <= 100 ms for 90% of requests holds up to about 12-16 req/s."""
    sim = start_sim("--model", "7b", "--max-num-seqs", "1")
    common = ["--url", sim.url, "--num-requests", "60", "--input-len", "64", "--output-len", "8", "--quiet"]
    grid = list(range(6, 19, 1))
    fine = run_loadgen("sweep", *common, "--qps", ",".join(map(str, grid)), "--slo", "ttft:100ms",
                       "--output", str(tmp_path / "fine"), "--json", timeout=300)
    assert fine.returncode == 0, fine.stderr
    points = json.loads(fine.stdout)["points"]
    assert [p["qps"] for p in points] == grid
    assert all((tmp_path / "fine" / f"qps-{q}" / "requests.jsonl").exists() for q in grid)
    achieved = [p["throughput"]["requests_per_s"] for p in points]
    # below saturation the server keeps up with the offered load; the curve rises (monotone-ish) to a plateau
    assert all(abs(a - q) / q < 0.1 for a, q in zip(achieved[:4], grid[:4]))
    assert all(b > a * 0.9 for a, b in zip(achieved, achieved[1:]))
    meeting = [p["qps"] for p in points if p["goodput"]["fraction"] >= 0.9]
    assert meeting and meeting[-1] < grid[-1], "the grid must straddle the saturation point"
    fine_best = max(meeting)

    search = run_loadgen("sweep", *common, "--until-slo", "ttft:100ms", "--start-qps", "6",
                         "--output", str(tmp_path / "search"), "--json", timeout=300)
    assert search.returncode == 0, search.stderr
    result = json.loads(search.stdout)["search"]
    print(f"fine sweep: {fine_best} req/s; --until-slo: {result['highest_meeting']:.2f} req/s "
          f"after {len(result['tried'])} points")
    assert result["converged"]
    assert abs(result["highest_meeting"] - fine_best) / fine_best <= 0.10
