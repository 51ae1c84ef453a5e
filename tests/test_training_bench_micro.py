"""training_bench micro on CPU at tiny shapes: FLOP/byte counts, every operator, gloo collectives, profiles."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from backends.sim.profile_cost import Profile  # noqa: E402
from backends.sim.roofline import EngineCostParams, SeqWork  # noqa: E402
from conftest import ROOT, run_loadgen  # noqa: E402
from scenarios.catalog import get_gpu, get_model  # noqa: E402
from training_bench import flops as fl  # noqa: E402
from training_bench import ops as O  # noqa: E402
from training_bench.comm import bus_factor, parse_sizes  # noqa: E402
from training_bench.timing import copies_for  # noqa: E402

TINY = get_model("tiny")  # hidden 256, intermediate 688, 2 layers, 4 heads of 64, vocab 2048


def bench(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "training_bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_flop_and_byte_counts_by_hand():
    assert fl.linear(8, 256, 768) == (2 * 8 * 256 * 768, 2 * (8 * 256 + 256 * 768 + 8 * 768))
    assert fl.linear_backward(8, 256, 768)[0] == 4 * 8 * 256 * 768
    # causal: query i sees i+1 keys; 4 queries -> 10 pairs; 4 FLOPs (QK^T and PV multiply-adds) per pair per dim
    assert fl.attention_prefill(1, 1, 4, 2)[0] == 4 * 2 * 10
    assert fl.attention_prefill(1, 1, 4, 2, causal=False)[0] == 4 * 2 * 16
    assert fl.attention_decode(2, 8, 100, 64, kv_heads=2) == (4 * 2 * 8 * 64 * 100, 2 * 2 * (2 * 2 * 100 * 64 + 2 * 8 * 64))
    assert fl.rmsnorm(10, 256) == (4 * 10 * 256, 2 * (2 * 10 * 256 + 256))
    assert fl.silu_mul(3, 100) == (1800, 2 * 3 * 3 * 100)
    assert fl.copy(1000) == (0.0, 2000.0)


def test_cases_use_the_model_shapes_and_tp_shards():
    cases = {c.name: c for c in O.op_cases(TINY, 2, 16, 4, 64, tp=2, phases=("prefill",))}
    # qkv at tp 2: (4/2 heads + 2 * 4/2 kv heads) * 64 = 384 output features, 32 tokens
    assert cases["qkv"].flops == fl.linear(32, 256, 384)[0]
    assert cases["down"].flops == fl.linear(32, 344, 256)[0]
    assert cases["lm_head"].flops == fl.linear(2, 256, 1024)[0]
    assert cases["attention[sdpa-flash]"].flops == fl.attention_prefill(2, 2, 16, 64, 2)[0]
    with pytest.raises(Exception, match="divide by tensor parallel degree 3"):
        O.op_cases(TINY, 1, 8, 1, 8, tp=3)


def test_every_operator_runs_on_cpu_with_backward():
    cases = O.op_cases(TINY, 2, 32, 4, 64, attention_impls=O.ATTENTION_IMPLS, backward=True)
    results = [O.run_case(c, torch.device("cpu"), torch.bfloat16, 1, 3) for c in cases]
    ran = [r for r in results if r.timing is not None]
    assert {r.case.phase for r in ran} == {"prefill", "decode", "train"}
    assert {r.case.name for r in ran} >= {"qkv", "o_proj", "gate_up", "down", "lm_head", "rmsnorm", "rope", "silu_mul",
                                         "softmax", "embedding", "attention[eager]", "attention[sdpa-math]"}
    for r in ran:
        d = r.as_dict(1.0, 10.0)
        assert d["median_ms"] > 0 and d["gbs"] > 0
        if r.case.group in O.MATRIX_GROUPS:
            assert d["bound"] in ("compute", "memory") and d["ceiling"] == ("gemm" if d["bound"] == "compute" else "copy")
        else:  # vector units: no measured compute ceiling, so never called compute-bound
            assert d["bound"] is None and d["ceiling"] == "copy"
    skipped = [r for r in results if r.timing is None]
    assert all(r.skipped.startswith("not available here") for r in skipped)
    assert copies_for(1) == 64 and copies_for(2**30) == 1


def test_ops_cli_json(tmp_path):
    out = tmp_path / "ops.json"
    proc = bench("micro", "ops", "--model", "tiny", "--prefill-batch", "1", "--seq-len", "32", "--decode-batch", "2",
                 "--context", "32", "--reps", "3", "--only", "gemm,attention,norm", "--attn", "eager,sdpa-math",
                 "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["ceilings"]["gemm"]["tflops"] > 0 and data["ceilings"]["copy"]["counts"] == "read + write"
    assert {r["name"] for r in data["ops"]} >= {"qkv", "attention[eager]", "rmsnorm"}
    assert "FLOP/s" in proc.stdout and "of ceiling" in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (["micro", "ops", "--only", "gemm,magic"], "unknown operator group"),
    (["micro", "ops", "--attn", "sdpa-warp"], "unknown attention implementation"),
    (["micro", "ops", "--model", "tiny", "--tp", "3"], "divide by tensor parallel degree 3"),
    (["micro", "ops", "--model", "gpt-9"], "unknown model"),
    (["micro", "comm"], "run under torchrun"),
    (["micro", "comm", "--sizes", "1Q"], "bad size"),
    (["micro", "profile", "--decode", "8by2048"], "BATCHxCONTEXT"),
])
def test_user_errors(args, needle):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = bench(*args, env=env)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bus_bandwidth_factors_and_sizes():
    assert bus_factor("all_reduce", 8) == pytest.approx(1.75)
    assert bus_factor("all_gather", 8) == pytest.approx(0.875) == bus_factor("reduce_scatter", 8)
    assert bus_factor("broadcast", 8) == 1.0 == bus_factor("send_recv", 2)
    assert parse_sizes("1K-8K") == [1024, 2048, 4096, 8192]
    assert parse_sizes("1M,2G") == [2**20, 2 * 2**30]


@pytest.mark.slow
def test_comm_suite_two_gloo_processes_under_torchrun(tmp_path):
    out = tmp_path / "comm.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "training_bench", "micro", "comm", "--sizes", "4K-64K", "--iters", "5",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["world"] == 2
    ops = {r["op"] for r in data["results"]}
    assert ops == {"all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all", "send_recv"}
    for r in data["results"]:
        assert r["backend"] == "gloo" and r["time_us"] > 0
        assert r["busbw_gbs"] == pytest.approx(r["algbw_gbs"] * {"all_reduce": 1.0, "all_gather": 0.5,
                                                                  "reduce_scatter": 0.5, "all_to_all": 0.5,
                                                                  "broadcast": 1.0, "send_recv": 1.0}[r["op"]])
        assert r["algbw_gbs"] == pytest.approx(r["bytes"] / (r["time_us"] / 1e6) / 1e9)


def test_layer_breakdown_on_cpu(tmp_path):
    out = tmp_path / "layer.json"
    proc = bench("micro", "layer", "--model", "tiny", "--tp", "1,2", "--seq-len", "32", "--reps", "3",
                 "--attn", "eager", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    for b in data["breakdowns"]:
        assert sum(b["share"].values()) == pytest.approx(1.0)
        assert (b["per_layer_ms"]["communication"] == 0) == (b["tp"] == 1)
    assert "estimated" in data["breakdowns"][1]["communication_source"]


def _synthetic_profile(path, model="tiny", per_op=1e-4):
    table = {"tokens": [1, 100], "seconds": [per_op, per_op * 100]}
    ops = {name: table for name in ("qkv", "o_proj", "gate_up", "down", "lm_head", "rmsnorm", "rope", "silu_mul",
                                    "embedding")}
    ops["attention_prefill"] = {"tokens": [10], "seconds": [55e-6]}  # 10 x 11 / 2 = 55 pairs -> 1 us per pair
    ops["attention_decode"] = {"kv_tokens": [100, 1000], "seconds": [1e-4, 1e-3]}
    path.write_text(json.dumps({"format": "dissect-profile", "version": 1, "model": model, "device": "test",
                                "ceilings": {"gemm": {"tflops": 500.0}, "copy": {"gbs": 2000.0}}, "ops": ops}))
    return path


def test_profile_iteration_time_by_hand(tmp_path):
    prof = Profile.load(_synthetic_profile(tmp_path / "p.json"))
    params = EngineCostParams(step_overhead_s=0.0)
    # one decode sequence at context 499: 1 token; per layer 7 table ops + a 2nd norm at 1e-4 s each, attention
    # reads 500 KV tokens -> 0.5 ms; 2 layers; plus embedding and LM head at 1e-4 each
    cost = prof.iteration_cost(TINY, get_gpu("h100"), 1, [SeqWork(1, 499, True)], params)
    assert cost.seconds == pytest.approx(2 * (8e-4 + 0.5e-3) + 2e-4)
    # a 10-token prefill chunk with no context: 55 pairs -> 55 us of attention per layer; ops scale with tokens
    cost = prof.iteration_cost(TINY, get_gpu("h100"), 1, [SeqWork(10, 0, True)], params)
    assert cost.seconds == pytest.approx(2 * (8 * 1e-3 + 55e-6) + 1e-3 + 1e-4)
    # below a table's smallest point the smallest time holds (launch-bound), beyond the largest it scales
    assert prof.tables["attention_decode"](10) == pytest.approx(1e-4)
    assert prof.tables["attention_decode"](2000) == pytest.approx(2e-3)
    other = Profile.load(_synthetic_profile(tmp_path / "q.json", model="llama-2-7b"))
    assert "ceilings only" in other.describe(TINY)


def test_profile_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something"}')
    proc = run_loadgen("run", "--model", "tiny", "--gpu", "rtx3090", "--profile", str(bad), "--output",
                       str(tmp_path / "r"))
    assert proc.returncode == 2 and "not a dissect profile" in proc.stderr
    proc = run_loadgen("run", "--url", "http://127.0.0.1:9", "--profile", str(bad), "--output", str(tmp_path / "s"))
    assert proc.returncode == 2 and "does not apply to --url" in proc.stderr


@pytest.mark.slow
def test_cpu_profile_round_trips_through_the_sim(tmp_path):
    prof = tmp_path / "cpu-tiny.json"
    made = bench("micro", "profile", "--model", "tiny", "--device", "cpu", "--tokens", "1,16,256", "--prefill-seqs",
                 "16,128", "--decode", "1x64,4x256", "--attn", "sdpa-math", "--reps", "3", "--gemm-size", "256",
                 "--copy-size", "16M", "--out", str(prof))
    assert made.returncode == 0, made.stderr
    data = json.loads(prof.read_text())
    assert data["format"] == "dissect-profile" and data["model"] == "tiny" and data["version"] == 1
    assert len(data["ops"]["qkv"]["tokens"]) == 3 and len(data["ops"]["attention_decode"]["kv_tokens"]) == 2
    out = tmp_path / "run"
    proc = run_loadgen("run", "--model", "tiny", "--gpu", "rtx3090", "--profile", str(prof), "--num-requests", "10",
                       "--qps", "20", "--input-len", "64", "--output-len", "8", "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert "measured profile" in summary["sim_cost_model"] and "per-operator tables for tiny" in summary["sim_cost_model"]
    assert summary["requests"]["completed"] == 10
    run = json.loads((out / "run.json").read_text())
    assert "--profile" in run["backend"]["launch_command"]


def test_committed_h100_profile_drives_the_sim():
    prof = Profile.load(ROOT / "results" / "h100-profile-7b.json")
    model = get_model("7b")
    assert prof.model == "llama-2-7b" and "H100" in prof.device and prof.gemm_tflops > 700
    params = EngineCostParams()
    one = prof.iteration_cost(model, get_gpu("h100"), 1, [SeqWork(1, 512, True)], params).seconds
    many = prof.iteration_cost(model, get_gpu("h100"), 1, [SeqWork(1, 512, True)] * 64, params).seconds
    prefill = prof.iteration_cost(model, get_gpu("h100"), 1, [SeqWork(2048, 0, True)], params).seconds
    # a decode step cannot beat streaming the weights once (13.5 GB at the measured 3.0 TB/s)
    assert model.weight_bytes() / (prof.copy_gbs * 1e9) < one < many < prefill


def test_cpu_defaults_units_and_bound_classification(tmp_path):
    out = tmp_path / "ops.json"
    proc = bench("micro", "ops", "--model", "tiny", "--device", "cpu", "--only", "gemm,norm,softmax", "--output",
                 str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    # CPU-sized defaults: fp32 (bf16 matmuls are ~14x slower on CPU), small prefill and decode shapes
    assert data["dtype"] == "fp32" and data["prefill"] == {"batch": 1, "seq_len": 256}
    assert data["decode"] == {"batch": 4, "context": 256} and data["ops"][0]["reps"] == 5
    # a CPU's GEMM ceiling is far below 1 TFLOP/s: the table speaks GFLOP/s, so no figure is a 0.0
    assert "GFLOP/s" in proc.stdout and "TFLOP/s" not in proc.stdout
    header = proc.stdout.splitlines()[0]
    assert " 0.0 GFLOP/s" not in header
    rows = {(r["phase"], r["name"]): r for r in data["ops"]}
    # matrix operators are classified against the roofline; vector ones only against the copy bandwidth
    assert rows[("prefill", "qkv")]["bound"] in ("compute", "memory")
    for name in ("rmsnorm", "softmax"):
        assert rows[("prefill", name)]["bound"] is None and rows[("prefill", name)]["ceiling"] == "copy"
    assert "matrix operators only" in proc.stdout


def test_layer_checks_every_tp_degree_before_measuring(monkeypatch, capsys):
    from training_bench import cli

    def measured(*_a, **_k):
        raise AssertionError("an operator was measured before the TP degrees were checked")

    monkeypatch.setattr(O, "run_case", measured)
    assert cli.main(["micro", "layer", "--model", "tiny", "--tp", "1,2,3", "--device", "cpu"]) == 2
    assert "divide by tensor parallel degree 3" in capsys.readouterr().err


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_every_subcommand_and_option_has_help():
    import argparse

    from training_bench.cli import build_parser

    parser = build_parser()
    subs = list(_subparsers(parser))
    assert {n for n, _ in subs} >= {"pretrain", "finetune", "sweep", "micro", "ops", "comm", "layer", "profile"}
    for name, sub in subs:
        assert sub.description, f"{name} has no description"
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
    # results paths are --output, as in loadgen; --out is a hidden alias
    ops_help = dict(subs)["ops"].format_help()
    assert "--output" in ops_help and "--out " not in ops_help


def test_version_flag():
    proc = bench("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("python -m training_bench ")
