"""training_bench's faster paths and engines (issue 27) and its CPU behaviour (issue 29), on CPU at tiny shapes.

What CPU can and cannot run, and so what these tests cover:
- liger-kernel: its Triton kernels need a GPU (the Triton interpreter fails inside liger's RMSNorm kernel), so on
  CPU the patch of the model instance is checked, and the CLI refuses `--kernels liger` up front.
- torchao float8: conversion and a real forward/backward run on CPU (torch 2.13 has a CPU `_scaled_mm`); the CLI
  still refuses `--precision fp8` on CPU, since the point of FP8 is the float8 tensor cores of an H100/H200.
- megatron-core: GPTModel builds on CPU under a one-process gloo group, and its decoder with our SDPA core
  attention gives the HF Llama's logits from the same weights; GPTModel.forward itself needs CUDA (its RoPE module
  moves the table to torch.cuda.current_device(), and the local DotProductAttention forks the CUDA RNG tracker
  for dropout), so the CLI refuses `--engine megatron` on CPU and the training step is tested on GPU only.
- torch.compile: both scopes train on CPU.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest

from scenarios.catalog import get_gpu, get_model
from tests.conftest import ROOT
from training_bench.errors import BenchError
from training_bench.memory_fit import check_fits, shard_factors
from training_bench.recommend import Row, describe, recommend, rows_from_file
from training_bench.train_config import TrainConfig, memory_estimate_gib

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

QUICK = ["--model", "tiny", "--seq-len", "32", "--micro-batch", "1", "--steps", "1", "--warmup", "1", "--quiet",
         "--device", "cpu"]


def bench(*args: str, timeout=600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training_bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --- CPU defaults, fp32, the fit check (issue 29 item 4) ---------------------------------------------------------

def test_cpu_run_without_shapes_takes_the_cpu_defaults_in_fp32(tmp_path):
    out = tmp_path / "r.json"
    proc = bench("pretrain", "--model", "tiny", "--device", "cpu", "--quiet", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    cfg = r["config"]
    assert (cfg["seq_len"], cfg["micro_batch"], cfg["steps"], cfg["warmup"]) == (128, 2, 3, 1)
    assert cfg["precision"] == "fp32" and r["applied"]["precision"] == "fp32"
    assert r["memory"]["parameters_bytes"] == get_model("tiny").param_count * 4  # fp32 weights
    assert "GFLOP/s" in proc.stdout and "HF Llama, eager" in proc.stdout  # no 0.0 TFLOP/s on a CPU
    assert r["fit_check"]["available_gib"] > 0 and r["fit_check"]["estimate_gib"] < r["fit_check"]["available_gib"]


def test_default_7b_on_a_cpu_says_it_will_not_fit():
    proc = bench("pretrain", "--device", "cpu")
    one_line_error(proc, "will not fit in memory")
    assert "--skip-fit-check" in proc.stderr and "GiB are available" in proc.stderr


def test_fit_check_arithmetic():
    est = {"weights": 10.0, "gradients": 10.0, "optimizer": 20.0, "activations": 5.0}
    ok = check_fits(est, 50 * 2**30, "test", "on the GPU")
    assert ok["estimate_gib"] == 45.0 and ok["exact_part_gib"] == 40.0
    with pytest.raises(BenchError, match="will not fit on the GPU: it needs about 45.0 GiB"):
        check_fits(est, 39 * 2**30, "test", "on the GPU")  # weights, gradients and Adam state alone exceed it
    # activations are an estimate: 30% slack before refusing on them
    check_fits({**est, "activations": 20.0}, 50 * 2**30, "test", "on the GPU")
    with pytest.raises(BenchError):
        check_fits({**est, "activations": 40.0}, 50 * 2**30, "test", "on the GPU")
    # FSDP over 4 ranks: each holds a quarter of weights, gradients and optimizer state
    assert shard_factors("fsdp", 0, 4) == (4, 4, 4) and shard_factors("deepspeed", 2, 4) == (1, 4, 4)
    assert check_fits(est, 15 * 2**30, "test", "x", *shard_factors("fsdp", 0, 4))["exact_part_gib"] == 10.0


def test_estimate_counts_fp32_and_liger():
    bf16 = memory_estimate_gib(TrainConfig(model="7b", precision="bf16", seq_len=2048, micro_batch=4))
    fp32 = memory_estimate_gib(TrainConfig(model="7b", precision="fp32", seq_len=2048, micro_batch=4))
    assert fp32["weights"] == pytest.approx(2 * bf16["weights"]) and fp32["optimizer"] == pytest.approx(
        2 * bf16["optimizer"])
    liger = memory_estimate_gib(TrainConfig(model="7b", kernels="liger", seq_len=2048, micro_batch=4))
    # fused linear cross-entropy never materialises the fp32 logits: 4 x 2048 tokens x 32000 x 4 bytes
    assert bf16["activations"] - liger["activations"] == pytest.approx(4 * 2048 * 32000 * 4 / 2**30)


def test_qlora_on_cpu_names_cuda_before_bitsandbytes():
    one_line_error(bench("finetune", "--method", "qlora", *QUICK), "needs a CUDA GPU")


@pytest.mark.parametrize("args, needle", [
    (["--kernels", "liger"], "need a CUDA GPU"),
    (["--precision", "fp8"], "needs an H100/H200-class GPU"),
    (["--engine", "megatron"], "--engine megatron needs a CUDA GPU"),
    (["--engine", "megatron", "--kernels", "liger"], "with --engine megatron leave --kernels none"),
    (["--tp", "2"], "--tp applies to --engine megatron"),
])
def test_gpu_only_paths_fail_up_front_on_cpu(args, needle):
    one_line_error(bench("pretrain", *QUICK, *args), needle)


def test_fp8_with_lora_is_refused():
    one_line_error(bench("finetune", "--method", "lora", "--precision", "fp8", *QUICK), "--precision fp8 with")


def test_output_flag_and_the_hidden_out_alias(tmp_path):
    for flag in ("--output", "--out"):
        out = tmp_path / f"{flag.strip('-')}.json"
        proc = bench("pretrain", *QUICK, flag, str(out))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(out.read_text())["config"]["model"] == "tiny"
    helptext = bench("pretrain", "--help").stdout
    assert "--output" in helptext and "--out " not in helptext and "--out\n" not in helptext


# --- liger-kernel -------------------------------------------------------------------------------------------------

LIGER_PATCH = r"""
import json, torch
from liger_kernel.transformers.model.llama import lce_forward
from liger_kernel.transformers.rms_norm import LigerRMSNorm
from scenarios.catalog import get_model
from training_bench.fast_paths import apply_kernels
from training_bench.model_build import build_model
model = build_model(get_model("tiny"), "sdpa", torch.device("cpu"), torch.float32)
before = apply_kernels(model, "none"), type(model).forward is model.forward.__func__
applied = apply_kernels(model, "liger")
layers = model.model.layers
print(json.dumps({"before": before, "applied": applied, "lce": model.forward.__func__ is lce_forward,
                  "norm": model.model.norm.forward.__func__ is LigerRMSNorm.forward,
                  "layer_norms": all(l.input_layernorm.forward.__func__ is LigerRMSNorm.forward for l in layers),
                  "mlp": [l.mlp._get_name() for l in layers]}))
"""


def test_liger_patches_the_model_instance(tmp_path):
    # in its own process: liger also patches the transformers module, so every later Llama in the process
    # would get its (CUDA-only) kernels; training runs are one process each for the same reason
    pytest.importorskip("liger_kernel", reason="liger-kernel not installed (pip install 'dissect[kernels]')")
    script = tmp_path / "liger.py"
    script.write_text(LIGER_PATCH)
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["before"] == [[], True]
    assert got["applied"] == ["rms_norm", "rope", "swiglu", "fused_linear_cross_entropy"]
    assert got["lce"] and got["norm"] and got["layer_norms"]  # fused linear cross-entropy: no logits materialised
    assert got["mlp"] == ["LigerSwiGLUMLP"] * get_model("tiny").num_layers


# --- torchao float8 -----------------------------------------------------------------------------------------------

def test_fp8_converts_the_decoder_linears_and_trains_close_to_bf16():
    pytest.importorskip("torchao", reason="torchao not installed (pip install 'dissect[fp8]')")
    from torchao.float8.float8_linear import Float8Linear

    from training_bench.fast_paths import convert_fp8
    from training_bench.model_build import build_model

    spec = get_model("tiny")
    torch.manual_seed(0)
    ref = build_model(spec, "sdpa", torch.device("cpu"), torch.bfloat16)
    fp8 = build_model(spec, "sdpa", torch.device("cpu"), torch.bfloat16)
    fp8.load_state_dict(ref.state_dict())
    assert convert_fp8(fp8) == spec.num_layers * 7  # q, k, v, o, gate, up, down in every layer
    assert type(fp8.lm_head) is torch.nn.Linear  # the LM head stays in bf16
    assert all(isinstance(m, Float8Linear) for m in fp8.model.layers[0].mlp.children() if hasattr(m, "weight"))
    ids = torch.randint(0, spec.vocab_size, (2, 32))
    losses = []
    for model in (ref, fp8):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=0.02)
    g_ref = ref.model.layers[0].mlp.up_proj.weight.grad.float()
    g_fp8 = fp8.model.layers[0].mlp.up_proj.weight.grad.float()
    cos = torch.nn.functional.cosine_similarity(g_ref.flatten(), g_fp8.flatten(), dim=0)
    assert cos > 0.9  # float8 rounding, not a different gradient


# --- torch.compile ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["layers", "model"])
def test_compile_scopes_train_on_cpu(tmp_path, scope):
    out = tmp_path / "r.json"
    proc = bench("pretrain", *QUICK, "--compile", "--compile-scope", scope, "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["applied"]["compile"] == scope and r["throughput"]["tokens_per_s"] > 0


def test_layer_scope_compiles_every_decoder_layer_in_place():
    from torch._dynamo.utils import counters

    from training_bench.fast_paths import compile_model
    from training_bench.model_build import build_model

    spec = dataclasses.replace(get_model("tiny"), num_layers=6)
    model = build_model(spec, "sdpa", torch.device("cpu"), torch.float32)
    names = [n for n, _ in model.named_parameters()]
    assert compile_model(model, "layers") is model
    assert all(layer._compiled_call_impl is not None for layer in model.model.layers)
    assert [n for n, _ in model.named_parameters()] == names  # state-dict names unchanged
    torch._dynamo.reset()
    counters.clear()
    ids = torch.randint(0, spec.vocab_size, (1, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    # the identical layers share one graph: compiling costs one layer's time, whatever the depth
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]


# --- megatron-core ------------------------------------------------------------------------------------------------

MEGATRON_BUILD = r"""
import json, os, sys, torch, torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
dist.init_process_group("gloo", rank=0, world_size=1)
from scenarios.catalog import get_model
from training_bench import megatron_engine as ME
from training_bench.model_build import build_model
ME.init_parallel(1, 0, on_cuda=False)
spec = get_model("tiny")
gpt = ME.build_gpt(spec, "sdpa", torch.device("cpu"), torch.float32)
local = ME.build_gpt(spec, "eager", torch.device("cpu"), torch.float32, recompute="full")
hf = build_model(spec, "sdpa", torch.device("cpu"), torch.float32)
layer = gpt.decoder.layers[0]
# The same numbers, not only the same shapes: HF's weights mapped into megatron-core's layout (fused QKV grouped
# by KV head, gate and up fused in fc1), the decoder run on CPU with the RoPE table computed here (GPTModel's own
# RoPE module moves it to CUDA), logits compared.
hd, nh, ng, hsz = spec.head_dim, spec.num_heads, spec.num_kv_heads, spec.hidden_size
with torch.no_grad():
    gpt.embedding.word_embeddings.weight.copy_(hf.model.embed_tokens.weight)
    gpt.output_layer.weight.copy_(hf.lm_head.weight)
    gpt.decoder.final_layernorm.weight.copy_(hf.model.norm.weight)
    for lm, lh in zip(gpt.decoder.layers, hf.model.layers):
        a = lh.self_attn
        q = a.q_proj.weight.view(ng, nh // ng, hd, hsz)
        k, v = a.k_proj.weight.view(ng, 1, hd, hsz), a.v_proj.weight.view(ng, 1, hd, hsz)
        lm.self_attention.linear_qkv.weight.copy_(torch.cat([q, k, v], 1).reshape(-1, hsz))
        lm.self_attention.linear_proj.weight.copy_(a.o_proj.weight)
        lm.mlp.linear_fc1.weight.copy_(torch.cat([lh.mlp.gate_proj.weight, lh.mlp.up_proj.weight], 0))
        lm.mlp.linear_fc2.weight.copy_(lh.mlp.down_proj.weight)
        lm.input_layernorm.weight.copy_(lh.input_layernorm.weight)
        lm.pre_mlp_layernorm.weight.copy_(lh.post_attention_layernorm.weight)
    s = 16
    ids = torch.randint(0, spec.vocab_size, (2, s))
    inv = gpt.rotary_pos_emb.inv_freq
    freqs = torch.outer(torch.arange(s, dtype=inv.dtype), inv)
    emb = torch.cat([freqs, freqs], -1)[:, None, None, :]
    hidden = gpt.embedding(input_ids=ids, position_ids=torch.arange(s).expand(2, -1))
    out = gpt.decoder(hidden_states=hidden, attention_mask=None, rotary_pos_emb=emb)
    logits = gpt.output_layer(out)[0].transpose(0, 1)
    ref = hf(input_ids=ids).logits
print(json.dumps({"logits_max_diff": (logits - ref).abs().max().item(), "logits_max": ref.abs().max().item(),
    "megatron": sum(p.numel() for p in gpt.parameters()), "hf": sum(p.numel() for p in hf.parameters()),
    "core": type(layer.self_attention.core_attention).__name__,
    "local_core": type(local.decoder.layers[0].self_attention.core_attention).__name__,
    "recompute": local.config.recompute_granularity, "qkv": list(layer.self_attention.linear_qkv.weight.shape),
    "fc1": list(layer.mlp.linear_fc1.weight.shape), "tied": gpt.share_embeddings_and_output_weights,
}))
"""


def test_megatron_gpt_is_the_hf_llama_on_cpu(tmp_path):
    pytest.importorskip("megatron.core", reason="megatron-core not installed (pip install 'dissect[megatron]')")
    script = tmp_path / "build.py"
    script.write_text(MEGATRON_BUILD)
    proc = subprocess.run([sys.executable, str(script), str(29700 + os.getpid() % 200)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    spec = get_model("tiny")
    assert got["megatron"] == got["hf"] == spec.param_count  # the same model, parameter for parameter
    assert got["core"] == "SDPACoreAttention" and got["local_core"] == "DotProductAttention"
    assert got["recompute"] == "full" and got["tied"] is False
    assert got["qkv"] == [(spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim, spec.hidden_size]
    assert got["fc1"] == [2 * spec.intermediate_size, spec.hidden_size]  # gate and up fused (SwiGLU)
    assert got["logits_max"] > 0.1 and got["logits_max_diff"] < 1e-4  # fp32: the same function as the HF Llama


@pytest.mark.parametrize("heads, groups", [(4, 4), (4, 2)])
def test_sdpa_core_attention_is_causal_attention_in_megatron_layout(heads, groups):
    pytest.importorskip("megatron.core", reason="megatron-core not installed (pip install 'dissect[megatron]')")
    from megatron.core.transformer.transformer_config import TransformerConfig

    from training_bench.megatron_engine import sdpa_core_attention

    config = TransformerConfig(num_layers=1, hidden_size=heads * 8, num_attention_heads=heads,
                               num_query_groups=groups, use_cpu_initialization=True)
    attn = sdpa_core_attention()(config, layer_number=1, attn_mask_type=None, attention_type="self")
    s, b, d = 6, 2, 8
    q, k, v = torch.randn(s, b, heads, d), torch.randn(s, b, groups, d), torch.randn(s, b, groups, d)
    out = attn(q, k, v, attention_mask=None)
    assert out.shape == (s, b, heads * d)
    rep = heads // groups
    for bi in range(b):
        for h in range(heads):
            scores = q[:, bi, h] @ k[:, bi, h // rep].T / math.sqrt(d)
            scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
            expect = torch.softmax(scores, -1) @ v[:, bi, h // rep]
            assert torch.allclose(out[:, bi, h * d:(h + 1) * d], expect, atol=1e-5)


# --- sweep: axes, rows that say what they ran, the recommendation --------------------------------------------------

def test_sweep_runs_the_axes_refuses_what_cannot_run_and_recommends(tmp_path):
    out = tmp_path / "sweep.json"
    proc = bench("sweep", *QUICK, "--vary", "kernels=none,liger", "--vary", "precision=fp32,bf16",
                 "--point", "engine=megatron,attn=sdpa", "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    by = {p["label"]: p for p in report["points"]}
    assert list(by) == ["kernels=none, precision=fp32", "kernels=none, precision=bf16",
                        "kernels=liger, precision=fp32", "kernels=liger, precision=bf16", "engine=megatron, attn=sdpa"]
    for label in ("kernels=none, precision=fp32", "kernels=none, precision=bf16"):
        assert by[label]["result"]["config"]["precision"] == label.split("=")[-1]
    # GPU-only points are refused without starting a process, with the one-line reason
    assert by["kernels=liger, precision=bf16"]["error"].startswith("not run: --kernels liger runs Triton kernels")
    assert by["engine=megatron, attn=sdpa"]["error"].startswith("not run: --engine megatron needs a CUDA GPU")
    assert "what it ran" in proc.stdout and "HF Llama, eager" in proc.stdout
    fastest = max((p for p in report["points"] if p["result"]),
                  key=lambda p: p["result"]["throughput"]["tokens_per_s"])
    assert report["recommended"][0]["label"] == fastest["label"]
    assert "recommended: fastest that fits for full tiny" in proc.stdout and fastest["label"] in proc.stdout
    # the recommendation can be made again from the file, without running anything
    again = bench("sweep", "--from", str(out))
    assert again.returncode == 0 and fastest["label"] in again.stdout


def _row(label, tok_s, peak_gib, device="NVIDIA H200", method="full", layers=32):
    return Row(label, {"throughput": {"tokens_per_s": tok_s}, "memory": {"peak_bytes": int(peak_gib * 2**30)},
                       "config": {"method": method}, "device": device, "mfu": None,
                       "model": {"name": "llama-2-7b", "layers": layers, "full_layers": 32, "truncated": layers != 32}})


def test_recommendation_is_the_fastest_measured_row_that_fits():
    rows = [_row("baseline", 1000, 110), _row("compile", 1500, 120), _row("no-recompute mb8", 1800, 140),
            _row("h100 row", 9000, 50, device="NVIDIA H100 80GB HBM3"), _row("lora", 5000, 40, method="lora")]
    h200 = get_gpu("h200")
    best = recommend(rows, h200)
    # 140 GiB does not fit 141 less headroom; the H100's row says nothing of the H200; LoRA is its own group
    assert best[("full", "llama-2-7b", 32)].label == "compile" and best[("lora", "llama-2-7b", 32)].label == "lora"
    assert "compile -> 1,500 tok/s" in describe(best[("full", "llama-2-7b", 32)], h200)
    assert "peak 120.0 GiB of 141" in describe(best[("full", "llama-2-7b", 32)], h200)
    assert recommend(rows, get_gpu("h100"))[("full", "llama-2-7b", 32)].label == "h100 row"


def test_recommendation_reads_training_matrix_results(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"runs": [{"name": "a", "result": _row("a", 10, 1).result},
                                         {"name": "b", "result": None, "error": "oom"}]}))
    assert [r.label for r in rows_from_file(str(path))] == ["a"]


# --- on a GPU (skipped here): each path trains the tiny model and says what it applied ------------------------------

GPU = ["--model", "tiny", "--seq-len", "128", "--micro-batch", "2", "--steps", "2", "--warmup", "1", "--quiet"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("args, check", [
    (["--kernels", "liger"], lambda a: a["kernels"] == ["rms_norm", "rope", "swiglu", "fused_linear_cross_entropy"]),
    (["--kernels", "liger", "--compile"], lambda a: a["kernels"] and a["compile"] == "layers"),
    (["--precision", "fp8", "--compile"], lambda a: a["fp8_linears"] == 14 and a["precision"] == "fp8"),
    (["--engine", "megatron", "--attn", "sdpa"], lambda a: a["engine"] == "megatron"),
    (["--engine", "megatron", "--attn", "eager", "--recompute", "full"], lambda a: a["engine"] == "megatron"),
])
def test_fast_paths_train_on_gpu(tmp_path, args, check):
    if "fp8" in args and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("float8 needs compute capability 8.9+")
    out = tmp_path / "r.json"
    proc = bench("pretrain", *GPU, *args, "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert check(r["applied"]) and r["throughput"]["tokens_per_s"] > 0 and r["memory"]["peak_bytes"] > 0


def test_mfu_is_stated_against_the_bf16_peak_and_an_fp8_run_also_against_the_fp8_peak():
    from training_bench.train import mfu_figures

    h200 = get_gpu("h200")
    bf16 = mfu_figures(494.5, h200, "bf16")
    assert bf16["value"] == pytest.approx(0.5) and bf16["basis"] == "bf16" and "of_fp8_peak" not in bf16
    fp8 = mfu_figures(791.2, h200, "fp8")  # what an H200 run measured: 80% of 989, 40% of 1979
    assert fp8["value"] == pytest.approx(0.8) and fp8["of_fp8_peak"] == pytest.approx(791.2 / 1979)
    assert mfu_figures(100.0, get_gpu("a100-80g"), "fp8").get("of_fp8_peak") is None  # no FP8 tensor cores
    assert mfu_figures(100.0, None, "bf16") is None
    row = Row("precision=fp8", {"config": {"method": "full", "model": "7b", "layers": 8, "precision": "fp8"},
                                "model": {"name": "llama-2-7b", "layers": 8, "full_layers": 32,
                                          "truncated": True},
                                "throughput": {"tokens_per_s": 68369.0}, "memory": {"peak_bytes": 2**30},
                                "mfu": fp8, "device": "NVIDIA H200"})
    assert "MFU 80.0% of the bf16 peak (40.0% of the fp8 peak)" in describe(row, h200)


def test_recommendation_from_several_measured_files():
    """The H200 full-depth rows are in two files (two device calls): --from takes both."""
    a, b = (str(ROOT / "results" / f"h200-training-7b-full-{x}.json") for x in "ab")
    one = bench("sweep", "--from", a)
    assert one.returncode == 0 and "full llama-2-7b (32 layers) on NVIDIA H200: precision=bf16" in one.stdout
    both = bench("sweep", "--from", a, "--from", b)
    assert both.returncode == 0, both.stderr
    assert "full llama-2-7b (32 layers) on NVIDIA H200: precision=fp8, compile=True, kernels=none -> 18,832" in both.stdout
    assert "lora llama-2-7b" in both.stdout and "qlora llama-2-7b" in both.stdout
