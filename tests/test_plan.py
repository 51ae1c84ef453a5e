"""loadgen plan: feasibility rules, memory and preemption, ranking math, confidence labels, the keeping-up rule of
the max-rate search, bad input, and small end-to-end searches through `python -m loadgen.plan`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from backends.sim.config import SimConfig
from backends.sim.roofline import memory_plan
from loadgen.errors import LoadgenError
from loadgen.plan.confidence import INDEX, ValidationIndex
from loadgen.plan.rank import parse_prices, replicas_for, score, sort_key
from loadgen.plan.report import pareto
from loadgen.plan.search import PointSize, Slo, max_rate, predict_point
from loadgen.plan.space import (
    EngineConfig,
    SearchSpace,
    infeasible_reason,
    memory_facts,
)
from loadgen.plan.workload import from_distributions
from scenarios.catalog import get_gpu, get_model, list_gpus

ROOT = Path(__file__).resolve().parent.parent
SMALL = PointSize(seconds=10.0, min_requests=100, max_requests=600)


def _engine(gpu="h100-sxm", tp=1, seqs=256, tokens=8192) -> EngineConfig:
    return EngineConfig(gpu, tp, seqs, tokens)


# -- feasibility --------------------------------------------------------------------------------------------------
def test_weights_that_do_not_fit_are_infeasible_with_the_numbers():
    why = infeasible_reason(get_model("70b"), get_gpu("rtx4090"), _engine("rtx4090", 1), 640, 4096)
    assert why is not None and why.startswith("does not fit in memory")
    assert "128.5 GiB of weights per GPU" in why and "19.6 GiB usable" in why


def test_tp_must_divide_attention_heads_and_kv_heads():
    seven = get_model("7b")  # 32 heads
    assert "does not divide the model's 32 attention heads" in infeasible_reason(
        seven, get_gpu("h100"), _engine(tp=3), 640, 4096)
    odd = replace(get_model("70b"), num_heads=48, num_kv_heads=8, hidden_size=6144)
    assert "8 KV heads" in infeasible_reason(odd, get_gpu("h100"), _engine(tp=6), 640, 4096)
    # more TP ranks than KV heads replicate them (vLLM does): 70B's 8 KV heads at TP 8 are fine
    assert infeasible_reason(get_model("70b"), get_gpu("h100"), _engine(tp=8), 640, 4096) is None
    assert "NVLink node" in infeasible_reason(seven, get_gpu("h100"), _engine(tp=16), 640, 4096)


def test_engine_limits_and_kv_capacity_rules():
    seven, h100 = get_model("7b"), get_gpu("h100")
    assert "below max_num_seqs 256" in infeasible_reason(seven, h100, _engine(seqs=256, tokens=128), 640, 4096)
    cap = memory_plan(seven, h100, 1).kv_capacity_tokens
    why = infeasible_reason(seven, h100, _engine(), 640, cap + 1)
    assert why == f"KV cache holds {cap} tokens, less than one {cap + 1}-token sequence (max_model_len)"
    assert infeasible_reason(seven, h100, _engine(), 640, cap) is None


def test_memory_facts_and_preemption_onset_by_hand():
    seven, h100 = get_model("7b"), get_gpu("h100")
    weights = seven.param_count * 2
    kv_bytes = 80 * 2**30 * 0.9 - 2 * 2**30 - weights
    tokens = int(kv_bytes // (2 * 32 * 32 * 128 * 2))
    facts = memory_facts(seven, h100, 1, 256, 512 + 128)
    assert facts.kv_capacity_tokens == tokens
    assert facts.kv_blocks == tokens // 16
    assert facts.blocks_per_request == 40  # 640 tokens in blocks of 16
    assert facts.preemption_above_seqs == (tokens // 16) // 40 == facts.fits_at_full_length
    # a sequence limit below what fits never preempts on average
    assert memory_facts(seven, h100, 1, 128, 640).preemption_above_seqs is None


def test_search_space_counts_replicas_within_the_gpu_budget():
    space = SearchSpace((get_gpu("h100"), get_gpu("h200")), (1, 2, 4, 8), (128, 256), (8192,), 8)
    # per GPU and engine setting: 8 + 4 + 2 + 1 replica counts
    assert len(space.candidates()) == 2 * 2 * (8 + 4 + 2 + 1)
    assert all(c.gpus <= 8 for c in space.candidates())


# -- ranking ------------------------------------------------------------------------------------------------------
def test_scores_by_hand_fully_loaded_and_for_a_target():
    s = score(10.0, replicas=2, tp=2, slo_fraction=0.95, mean_output_tokens=128, price_per_gpu_hour=2.5)
    assert (s.gpus, s.max_rate_per_s, s.operating_rate_per_s) == (4, 20.0, 20.0)
    assert s.goodput_per_s == pytest.approx(19.0) and s.goodput_per_gpu == pytest.approx(4.75)
    assert s.output_tok_s == 2560 and s.cost_per_hour == 10.0
    assert s.cost_per_m_output_tokens == pytest.approx(10 / (2560 * 3600) * 1e6)  # $1.0851
    t = score(10.0, 2, 2, 0.95, 128, 2.5, target_rate=15.0)
    assert t.operating_rate_per_s == 15.0 and t.goodput_per_s == pytest.approx(14.25)
    assert t.cost_per_m_output_tokens == pytest.approx(10 / (1920 * 3600) * 1e6)  # $1.4468
    assert t.rate_headroom == pytest.approx(20 / 15 - 1)
    assert score(10.0, 1, 1, 1.0, 128, None).cost_per_m_output_tokens is None


def test_replicas_for_a_target_and_rank_order():
    assert replicas_for(40, 14.09) == 3 and replicas_for(40, 20) == 2 and replicas_for(1, 50) == 1
    cheap = score(10.0, 1, 1, 1.0, 100, 1.0)  # $0.278 / M
    dear = score(10.0, 1, 1, 1.0, 100, 2.0)
    unknown = score(30.0, 1, 1, 1.0, 100, None)
    assert sorted([dear, unknown, cheap], key=sort_key("cost")) == [cheap, dear, unknown]
    assert min([cheap, unknown], key=sort_key("max-rate")) is unknown
    # R replicas of one engine cost the same per token (up to float rounding): the fewest GPUs rank first
    replicas = [score(23.7366, r, 1, 1.0, 100, 3.1) for r in (7, 3, 1, 5)]
    assert [s.gpus for s in sorted(replicas, key=sort_key("cost"))] == [1, 3, 5, 7]
    with pytest.raises(LoadgenError):
        sort_key("nope")


def test_pareto_front_by_hand():
    # (cost, latency): (1, 5) and (2, 3) and (4, 1) are the front; (3, 4) is beaten by (2, 3)
    assert sorted(pareto([(3, 4), (1, 5), (2, 3), (4, 1)])) == [1, 2, 3]


def test_prices_parse_aliases_and_reject_bad_ones():
    keys = {n: g.key for g in list_gpus() for n in (g.key, *g.aliases)}
    assert parse_prices("h100=2.5, h200=3.1", keys) == {"h100-sxm": 2.5, "h200": 3.1}
    for bad in ("h100", "b300=4", "h100=-1", "h100=abc"):
        with pytest.raises(LoadgenError):
            parse_prices(bad, keys)


# -- confidence ---------------------------------------------------------------------------------------------------
def test_confidence_labels_validated_combination_and_extrapolated():
    index = ValidationIndex.load()
    v = index.confidence("h100-sxm", "llama-2-7b", 1, 512, 128, 256, 8192)
    assert v.label == "validated" and v.nearest == "llama-2-7b on 1xh100-sxm, 512 in / 128 out"
    assert v.differences == () and 0 < v.median_abs_error["tpot_p50_ms"] < v.max_abs_error["tpot_p50_ms"]
    assert v.max_rate_check is not None  # benchmarks/plan_vs_measured.py's check on this configuration
    c = index.confidence("h100-sxm", "llama-3-8b", 1, 256, 192, 256, 8192)  # 8B measured on the H200 only
    assert c.label == "unmeasured combination" and c.nearest.startswith("llama-3-8b on 1xh200")
    e = index.confidence("h100-sxm", "llama-2-70b", 4, 512, 128, 256, 8192)
    assert e.label == "extrapolated" and set(e.never_measured) == {"model llama-2-70b", "TP 4"}
    assert e.short() == "extrapolated (model llama-2-70b, TP 4 never measured)"
    g = index.confidence("rtx4090", "llama-2-7b", 1, 512, 128, 256, 8192)
    assert g.label == "extrapolated" and g.never_measured == ("GPU rtx4090",)


def test_confidence_ignores_superseded_models(tmp_path):
    data = json.loads(INDEX.read_text())
    for e in data["entries"]:
        e["current"] = e["gpu"] != "h100-sxm"
    path = tmp_path / "index.json"
    path.write_text(json.dumps(data))
    c = ValidationIndex.load(path).confidence("h100-sxm", "llama-2-7b", 1, 512, 128, 256, 8192)
    assert c.label == "extrapolated" and c.never_measured == ("GPU h100-sxm",)


def test_validation_index_is_reproducible(tmp_path):
    out = tmp_path / "index.json"
    subprocess.run([sys.executable, "benchmarks/sim_validation_index.py", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    assert json.loads(out.read_text()) == json.loads(INDEX.read_text())


# -- the search ---------------------------------------------------------------------------------------------------
def _h100_7b(**kw) -> SimConfig:
    return SimConfig(model=get_model("7b"), gpu=get_gpu("h100"), **kw)


def test_a_rate_the_engine_cannot_keep_up_with_fails_even_when_latencies_pass():
    work = from_distributions("512", "128", 600, 0, 4096)
    loose = Slo({"ttft": 1e6, "tpot": 1e6})  # no latency limit binds: only keeping up can fail
    over = predict_point(_h100_7b(), work, 100.0, SMALL, 0, loose)
    assert over.percentiles_ms["ttft"] < 1e6 and not over.meets and "fell behind" in over.failed
    result = max_rate(_h100_7b(), work, loose, SMALL)
    assert result.max_rate_per_s is not None and 10 < result.max_rate_per_s < 100
    assert not result.reason  # a finite capacity, not the search's ceiling


def test_max_rate_is_bracketed_by_probes_and_respects_the_slo():
    work = from_distributions("512", "128", 600, 0, 4096)
    slo = Slo({"ttft": 100.0, "tpot": 10.0})
    result = max_rate(_h100_7b(), work, slo, SMALL)
    rate = result.max_rate_per_s
    assert result.at_max.meets and result.at_max.percentiles_ms["tpot"] <= 10.0
    failing = [r for r, ok in result.probes if not ok]
    assert failing and min(f for f in failing if f > rate) <= rate * 1.02 + 1e-9
    tight = max_rate(_h100_7b(), work, Slo({"tpot": 1.0}), SMALL)  # no engine decodes in 1 ms
    assert tight.max_rate_per_s is None and "even one request at a time" in tight.reason


# -- the command --------------------------------------------------------------------------------------------------
def _plan(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "loadgen.plan", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("args, words", [
    (["--slo", "ttft:100ms", "--gpu", "b300"], "unknown GPU 'b300'"),
    (["--slo", "ttft:100ms", "--tp", "0"], "bad --tp"),
    (["--slo", "ttft:100ms", "--tp", "two"], "bad --tp"),
    (["--slo", "itl:5ms"], "predicts ttft, tpot, e2el only"),
    (["--slo", "ttft:100"], "has no unit"),
    ([], "give --slo"),
    (["--slo", "ttft:100ms", "--gpu-price", "h100=abc"], "bad --gpu-price"),
    (["--slo", "ttft:100ms", "--rate", "-3"], "--rate must be a positive number"),
    (["--slo", "ttft:100ms", "--input-len", "banana"], "bad --input-len"),
    (["--slo", "ttft:100ms", "--scenario", "nope"], "unknown scenario"),
    (["--slo", "ttft:100ms", "--tp", "8", "--max-gpus", "4"], "raise --max-gpus"),
    (["--slo", "ttft:100ms", "--rank", "best"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, words):
    proc = _plan(*args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr


def test_end_to_end_small_search_json_and_text(tmp_path):
    common = ["--gpu", "h100,rtx4090", "--model", "7b", "--tp", "1,2", "--max-gpus", "2", "--max-num-seqs", "256",
              "--max-batched-tokens", "8192", "--slo", "ttft:200ms,tpot:15ms", "--point-seconds", "10",
              "--min-requests", "100", "--max-requests", "600", "--jobs", "1", "--quiet",
              "--gpu-price", "h100=2.5"]
    proc = _plan(*common, "--json", "--html", str(tmp_path / "plan.html"))
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["simulated"] is True and "SIMULATED" in plan["label"]
    assert plan["search"]["configurations"] == 2 * (2 + 1)  # 2 GPUs x (TP1 x 1-2 replicas + TP2 x 1)
    ranked = plan["ranked"]
    assert ranked and all(r["feasible"] and r["confidence"]["label"] for r in ranked)
    best = ranked[0]
    assert best["gpu"] == "h100-sxm" and best["tp"] == 1 and best["replicas"] == 1  # cheapest per token
    assert best["confidence"]["label"] == "validated"
    assert best["cost_per_m_output_tokens"] == pytest.approx(
        2.5 * best["gpus"] / (best["max_rate_per_s"] * 128 * 3600) * 1e6)
    assert best["memory"]["kv_capacity_tokens_per_replica"] == memory_plan(get_model("7b"), get_gpu("h100"),
                                                                           1).kv_capacity_tokens
    four = [r for r in ranked + plan["infeasible"] if r["gpu"] == "rtx4090"]
    assert four and all(r["confidence"]["label"] == "extrapolated" for r in four if r["feasible"])
    assert all(r["reason"] for r in plan["infeasible"])
    assert "Pareto" in (tmp_path / "plan.html").read_text()
    text = _plan(*common, "--top", "3")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("SIMULATED") and "validated" in text.stdout and "$/M out tok*" in text.stdout


def test_end_to_end_scenario_with_a_target_rate():
    proc = _plan("--scenario", "chat", "--gpu", "h100", "--tp", "1", "--max-gpus", "3", "--max-num-seqs", "256",
                 "--max-batched-tokens", "8192", "--rate", "20", "--point-seconds", "10", "--min-requests", "100",
                 "--max-requests", "600", "--jobs", "1", "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["workload"].startswith("scenario chat: input lognormal:256,1") and plan["slo"]["limits_ms"] == {
        "ttft": 1000.0, "tpot": 100.0}
    for r in plan["ranked"]:
        assert r["replicas"] * r["engine_max_rate_per_s"] >= 20 and r["operating_rate_per_s"] == 20
    short = [r for r in plan["infeasible"] if "needs" in (r["reason"] or "")]
    assert all(r["replicas"] * r["engine_max_rate_per_s"] < 20 for r in short)


def test_a_good_guess_settles_the_search_in_fewer_replays_within_the_tolerance():
    work = from_distributions("512", "128", 600, 0, 4096)
    slo = Slo({"ttft": 100.0, "tpot": 10.0})
    cold = max_rate(_h100_7b(), work, slo, SMALL)
    warm = max_rate(_h100_7b(max_num_seqs=512), work, slo, SMALL, guess=cold.max_rate_per_s)
    assert warm.replays < cold.replays
    assert abs(warm.max_rate_per_s / cold.max_rate_per_s - 1) <= 0.02 + 1e-9
    far = max_rate(_h100_7b(), work, slo, SMALL, guess=cold.max_rate_per_s * 5)  # a bad guess still converges
    assert abs(far.max_rate_per_s / cold.max_rate_per_s - 1) <= 0.03


def test_dataset_lengths_and_gamma_scenarios(tmp_path):
    common = ["--gpu", "h100", "--tp", "1", "--max-gpus", "1", "--max-num-seqs", "256", "--max-batched-tokens",
              "8192", "--slo", "ttft:500ms,tpot:20ms", "--point-seconds", "10", "--min-requests", "100",
              "--max-requests", "400", "--jobs", "1", "--quiet", "--json"]
    proc = _plan("--dataset", "sharegpt-sample.json", *common)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["workload"].startswith("dataset sharegpt-sample.json (sharegpt") and plan["mean_input_tokens"] != 512
    bursty = tmp_path / "bursty.yaml"
    bursty.write_text("name: bursty\nversion: 1\ndescription: gamma arrivals\nworkload:\n  input_len: 512\n"
                      "  output_len: 128\narrival:\n  kind: gamma\n  burstiness: 0.25\n")
    # a latency-bound SLO, well below capacity
    tight = ["ttft:100ms,tpot:10ms" if a == "ttft:500ms,tpot:20ms" else a for a in common]
    smooth = json.loads(_plan("--input-len", "512", "--output-len", "128", *tight).stdout)
    proc = _plan("--scenario", str(bursty), *tight)
    assert proc.returncode == 0, proc.stderr
    gamma = json.loads(proc.stdout)
    assert gamma["burstiness"] == 0.25
    # burstier arrivals (CV 2) batch more requests at once: the same engine serves less under the same SLO
    assert gamma["ranked"][0]["max_rate_per_s"] < smooth["ranked"][0]["max_rate_per_s"]
    closed = tmp_path / "closed.yaml"
    closed.write_text("name: closed\nversion: 1\ndescription: users\narrival:\n  kind: closed\n  concurrency: 4\n")
    proc = _plan("--scenario", str(closed), *common)
    assert proc.returncode == 2 and "cannot be planned" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
