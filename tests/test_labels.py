"""Simulated figures say so wherever they appear, whatever the flags; a profile stands only for its own device."""

import json

import pytest

from backends.sim.profile_cost import Profile
from conftest import ROOT, run_loadgen
from scenarios.catalog import get_gpu

H100_PROFILE = ROOT / "results" / "h100-profile-7b.json"


def test_run_against_serve_sim_by_url_is_labelled_simulated(tmp_path, start_sim):
    sim = start_sim("--model", "tiny", "--gpu", "rtx3090", "--fixed-ttft", "2ms", "--fixed-itl", "1ms")
    out = tmp_path / "run"
    proc = run_loadgen("run", "--url", sim.url, "--num-requests", "4", "--qps", "20", "--input-len", "16",
                       "--output-len", "4", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["backend"]["simulated"] is True and "sim/info" in run["backend"]["detected"]
    assert (run["gpu"], run["gpus"]) == ("rtx3090", 1)  # what the sim stands for, not loadgen's --gpu default
    summary = json.loads((out / "summary.json").read_text())
    assert summary["simulated"] is True and "fixed timing" in summary["sim_cost_model"]
    assert "SIMULATED" in proc.stdout and "(SIMULATED)" in proc.stderr  # the table and the progress bar


def test_sweep_against_serve_sim_by_url_is_labelled_simulated(tmp_path, start_sim):
    sim = start_sim("--model", "tiny", "--fixed-ttft", "2ms", "--fixed-itl", "1ms")
    out = tmp_path / "sweep"
    proc = run_loadgen("sweep", "--url", sim.url, "--qps", "10,20", "--num-requests", "4", "--input-len", "16",
                       "--output-len", "4", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "sweep.json").read_text())["simulated"] is True
    assert "SIMULATED" in proc.stdout


def test_a_real_server_is_not_labelled_simulated(tmp_path, start_fault_server):
    server = start_fault_server("--mix", "ok", "--tokens", "4")
    out = tmp_path / "run"
    proc = run_loadgen("run", "--url", server.url, "--num-requests", "4", "--qps", "20", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["simulated"] is False
    assert "SIMULATED" not in proc.stdout + proc.stderr


def test_locust_against_serve_sim_by_url_says_simulated(tmp_path, start_sim):
    pytest.importorskip("locust")
    sim = start_sim("--model", "tiny", "--fixed-ttft", "2ms", "--fixed-itl", "1ms")
    out = tmp_path / "run"
    proc = run_loadgen("locust", "--url", sim.url, "--headless", "--users", "2", "--run-time", "2s",
                       "--input-len", "16", "--output-len", "4", "--output", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("SIMULATED") >= 2  # when the test starts, and under Locust's final table
    assert json.loads((out / "summary.json").read_text())["simulated"] is True
    assert json.loads((out / "run.json").read_text())["backend"]["simulated"] is True


def test_a_profile_stands_only_for_the_device_it_was_measured_on(tmp_path):
    prof = Profile.load(H100_PROFILE)
    assert prof.device == "NVIDIA H100 80GB HBM3"
    assert prof.device_mismatch(get_gpu("h100")) is None
    why = prof.device_mismatch(get_gpu("a100"))
    assert "NVIDIA H100 80GB HBM3" in why and "a100-80g" in why and "drop --profile" in why
    data = json.loads(H100_PROFILE.read_text())
    data["device"] = "CPU x86_64"
    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps(data))
    assert "'CPU x86_64'" in Profile.load(cpu).device_mismatch(get_gpu("h100"))


def test_run_with_a_profile_of_another_device_warns_before_and_after(tmp_path):
    data = json.loads(H100_PROFILE.read_text())
    data["device"] = "CPU x86_64"
    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps(data))
    out = tmp_path / "run"
    proc = run_loadgen("run", "--model", "7b", "--gpu", "h100", "--profile", str(cpu), "--num-requests", "3",
                       "--qps", "20", "--input-len", "16", "--output-len", "4", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("warning: profile") and "'CPU x86_64'" in first and "h100-sxm" in first
    assert any("'CPU x86_64'" in w for w in json.loads((out / "summary.json").read_text())["warnings"])
