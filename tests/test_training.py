"""training_bench pretrain / finetune / sweep on CPU with the tiny catalog model; GPU-only paths skip."""

import json
import os
import subprocess
import sys

import pytest

from scenarios.catalog import get_model
from tests.conftest import ROOT
from training_bench.flops import training_flops_per_token
from training_bench.train_cli import describe_applied
from training_bench.train_config import TrainConfig, memory_estimate_gib

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TINY = ["--model", "tiny", "--seq-len", "64", "--micro-batch", "2", "--steps", "2", "--warmup", "1", "--quiet",
        "--device", "cpu"]


def bench(*args: str, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training_bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_json(tmp_path, *args: str) -> dict:
    out = tmp_path / "r.json"
    proc = bench(*args, *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_flops_per_token_hand_count():
    # tiny: per layer 4*256^2 (attention) + 3*256*688 (MLP) + 2*256 (norms) = 791,040; two layers plus the
    # 2048 x 256 LM head: N = 2,106,368 matmul parameters
    spec = get_model("tiny")
    assert spec.matmul_params == 2_106_368
    flops, formula = training_flops_per_token(spec.matmul_params, 2, 256, 128)
    assert flops == 6 * 2_106_368 + 12 * 2 * 256 * 128 == 13_424_640
    assert "no causal halving" in formula and "6*N" in formula
    frozen, formula = training_flops_per_token(spec.matmul_params, 2, 256, 128, frozen_base=True)
    assert frozen == 4 * 2_106_368 + 12 * 2 * 256 * 128 and formula.startswith("4*N")


@pytest.mark.parametrize("attn", ["eager", "sdpa", "sdpa-flash", "sdpa-math"])
def test_pretrain_runs_each_cpu_attention(tmp_path, attn):
    r = run_json(tmp_path, "pretrain", "--attn", attn)
    assert r["config"]["attn"] == attn and r["config"]["method"] == "full" and r["strategy"] == "single"
    assert r["throughput"]["tokens_per_s"] > 0 and len(r["steps"]["step_ms_all"]) == 2
    assert set(r["phases_ms_median"]) == {"forward", "backward", "optimizer"}
    assert all(v > 0 for v in r["phases_ms_median"].values())
    # model TFLOP/s is exactly tokens/s x the printed per-token count
    assert r["flops"]["model_tflops_per_gpu"] == pytest.approx(
        r["throughput"]["tokens_per_s_per_gpu"] * r["flops"]["per_token"] / 1e12)
    assert r["flops"]["per_token"] == training_flops_per_token(2_106_368, 2, 256, 64)[0]
    assert r["memory"]["optimizer_state_bytes"] > 0 and r["mfu"] is None  # no catalog GPU on CPU
    # what produced the figures: the checkout's commit and the libraries' versions
    import torch
    env = r["environment"]
    assert env["packages"]["torch"] == torch.__version__ and "transformers" in env["packages"]
    assert "git_sha" in env and "git_dirty" in env and env["python"]


def test_truncation_accumulation_and_throughput_accounting(tmp_path):
    r = run_json(tmp_path, "pretrain", "--layers", "1", "--grad-accum", "3")
    assert r["model"]["truncated"] and r["model"]["layers"] == 1 and r["model"]["full_layers"] == 2
    tokens_per_step = 2 * 64 * 3
    assert r["throughput"]["tokens_per_s"] == pytest.approx(tokens_per_step / (r["steps"]["step_ms_median"] / 1e3))
    spec = get_model("tiny")
    n1 = spec.layer_params + spec.vocab_size * spec.hidden_size
    assert r["flops"]["per_token"] == 6 * n1 + 12 * 1 * 256 * 64


def test_lora_trains_only_the_adapters_and_recompute_runs(tmp_path):
    r = run_json(tmp_path, "finetune", "--method", "lora", "--rank", "4", "--recompute", "full")
    # rank 4 on q,k,v,o (256 -> 256), gate/up (256 -> 688), down (688 -> 256): r*(in+out) each, two layers
    assert r["model"]["trainable_parameters"] == 2 * 4 * (4 * 512 + 3 * 944)
    assert r["config"]["recompute"] == "full" and r["flops"]["formula"].startswith("4*N")
    # peft keeps adapter weights (so their gradients) in fp32 on a bf16 base
    assert r["memory"]["gradients_bytes"] == r["model"]["trainable_parameters"] * 4


def test_lora_adapters_in_the_base_dtype_on_request(tmp_path):
    """PEFT upcasts adapters of a bf16 base to fp32 and casts each adapter's input to fp32: on the H200 a LoRA step
    of the 7B shape took longer than a full-training step of the same path. --lora-dtype bf16 keeps them bf16."""
    wide = run_json(tmp_path, "finetune", "--method", "lora", "--rank", "4", "--precision", "bf16")
    assert wide["applied"]["lora_dtype"] == "float32" and "LoRA adapters float32" in describe_applied(wide)
    narrow = run_json(tmp_path, "finetune", "--method", "lora", "--rank", "4", "--precision", "bf16",
                      "--lora-dtype", "bf16")
    assert narrow["applied"]["lora_dtype"] == "bfloat16" and narrow["config"]["lora_dtype"] == "bf16"
    assert narrow["memory"]["gradients_bytes"] == narrow["model"]["trainable_parameters"] * 2


def test_recompute_gives_the_same_gradients():
    from training_bench.model_build import build_model, enable_recompute, truncated

    spec = truncated(get_model("tiny"), 1)
    torch.manual_seed(0)
    a = build_model(spec, "sdpa", torch.device("cpu"), torch.float32)
    b = build_model(spec, "sdpa", torch.device("cpu"), torch.float32)
    b.load_state_dict(a.state_dict())
    enable_recompute(b)
    a.train(), b.train()
    ids = torch.randint(0, spec.vocab_size, (2, 32))
    a(input_ids=ids, labels=ids).loss.backward()
    b(input_ids=ids, labels=ids).loss.backward()
    ga = a.model.layers[0].mlp.up_proj.weight.grad
    assert torch.allclose(ga, b.model.layers[0].mlp.up_proj.weight.grad, atol=1e-5)


def test_compile_runs_with_sdpa(tmp_path):
    r = run_json(tmp_path, "pretrain", "--compile", "--attn", "sdpa")
    assert r["config"]["compile"] is True and r["throughput"]["tokens_per_s"] > 0


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_torchrun_with_gloo(tmp_path, strategy):
    out = tmp_path / "r.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", str(29400 + (os.getpid() % 500)), "-m", "training_bench", "pretrain",
                           *TINY, "--strategy", strategy, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["world_size"] == 2 and r["strategy"] == strategy
    assert r["throughput"]["tokens_per_s"] == pytest.approx(2 * r["throughput"]["tokens_per_s_per_gpu"])
    if strategy == "fsdp":  # each rank holds half of the parameters (fp32: the CPU default precision)
        assert r["config"]["precision"] == "fp32"
        assert r["memory"]["parameters_bytes"] == pytest.approx(get_model("tiny").param_count * 4 / 2, rel=0.01)


def test_sweep_compares_options(tmp_path):
    out = tmp_path / "sweep.json"
    proc = bench("sweep", *TINY, "--vary", "recompute=none,full", "--vary", "attn=eager,sdpa", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert [p["vary"] for p in report["points"]] == [
        {"recompute": "none", "attn": "eager"}, {"recompute": "none", "attn": "sdpa"},
        {"recompute": "full", "attn": "eager"}, {"recompute": "full", "attn": "sdpa"}]
    assert all(p["result"]["config"]["recompute"] == p["vary"]["recompute"] for p in report["points"])
    assert "time vs first" in proc.stdout and "1.00x" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["pretrain", "--strategy", "fsdp"], "torchrun --nproc-per-node 2"),
    (["pretrain", "--recompute", "selective"], "none or full"),
    (["pretrain", "--attn", "sdpa-cudnn"], "CUDA kernel"),
    (["pretrain", "--offload", "optimizer"], "--zero"),
    (["pretrain", "--layers", "5"], "1..2"),
    (["pretrain", "--compile", "--attn", "sdpa-flash"], "--compile --attn sdpa"),
    (["sweep", "--vary", "colour=red"], "KEY=V1,V2"),
])
def test_impossible_configurations_are_one_line_errors(args, message):
    proc = bench(*args, *TINY)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_quantization_and_deepspeed_are_named():
    for args, package in ((["finetune", "--method", "qlora"], "bitsandbytes"), (["pretrain", "--zero", "2"], "DeepSpeed")):
        proc = bench(*args, *TINY)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        # on CPU the GPU requirement may be named instead when the package is installed
        assert package in proc.stderr or "CUDA" in proc.stderr


def test_out_of_memory_message_quotes_the_estimate():
    from training_bench.model_build import truncated
    from training_bench.train import _oom_message

    cfg = TrainConfig(model="7b", micro_batch=4, seq_len=2048)
    est = memory_estimate_gib(cfg)
    assert est["weights"] == pytest.approx(get_model("7b").param_count * 2 / 2**30)
    assert est["optimizer"] == pytest.approx(2 * est["weights"])  # bf16 Adam: two states
    low = memory_estimate_gib(TrainConfig(model="7b", recompute="full"))
    assert low["activations"] < est["activations"] / 5
    msg = _oom_message(truncated(get_model("7b"), None), cfg, "a training step")
    assert "--layers" in msg and "--recompute full" in msg and "--zero 3 --offload" in msg


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pretrain_on_gpu_reports_mfu_and_memory(tmp_path):
    out = tmp_path / "r.json"
    proc = bench("pretrain", "--model", "tiny", "--steps", "3", "--warmup", "1", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["memory"]["peak_bytes"] > r["memory"]["parameters_bytes"] > 0
    assert r["phase_timing"] == "CUDA events per phase"


def test_device_choice_on_a_machine_without_gpu():
    import torch

    from training_bench.devices import pick_device
    from training_bench.errors import BenchError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert pick_device("auto").type == "cpu" and pick_device("cpu", local_rank=1).type == "cpu"
    with pytest.raises(BenchError, match="no CUDA GPU is visible; use --device cpu"):
        pick_device("cuda", local_rank=0)
