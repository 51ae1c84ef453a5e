"""Framework adapters: launch argv against each framework's documented flags, protocols against local
PROTOCOL FIXTURES (tests/protocol_fixture.py: the wire formats, not the frameworks), and the server lifecycle
through the real adapter: launch, readiness, crash mid-run, launch failure, Ctrl-C, no process left behind."""

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from backends.launch_spec import LaunchRequest
from backends.registry import FRAMEWORKS, protocol_for
from conftest import ROOT, BackgroundServer, gone, run_loadgen

FIXTURE = [sys.executable, str(ROOT / "tests" / "protocol_fixture.py")]
HF = {"7b": "meta-llama/Llama-2-7b-hf", "13b": "meta-llama/Llama-2-13b-hf", "70b": "meta-llama/Llama-2-70b-hf"}
# The documented tensor-parallel flag of each framework.
TP_FLAG = {"vllm": "--tensor-parallel-size", "tgi": "--num-shard", "trtllm": "--tp_size", "lightllm": "--tp",
           "sglang": "--tp"}
MODEL_FLAG = {"vllm": None, "tgi": "--model-id", "trtllm": None, "lightllm": "--model_dir", "sglang": "--model-path"}
EXECUTABLE = {"vllm": ["vllm", "serve"], "tgi": ["text-generation-launcher"], "trtllm": ["trtllm-serve"],
              "lightllm": [sys.executable, "-m", "lightllm.server.api_server"],
              "sglang": [sys.executable, "-m", "sglang.launch_server"]}


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
@pytest.mark.parametrize("model", ["7b", "13b", "70b"])
@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_launch_argv_matrix(framework, model, gpus):
    spec = FRAMEWORKS[framework](LaunchRequest(model, gpus=gpus, port=9123))
    argv = spec.argv
    assert all(isinstance(a, str) for a in argv)  # an argv list, never a shell string
    assert argv[: len(EXECUTABLE[framework])] == EXECUTABLE[framework]
    assert argv[argv.index(TP_FLAG[framework]) + 1] == str(gpus)  # TP defaults to the GPU count
    if MODEL_FLAG[framework]:
        assert argv[argv.index(MODEL_FLAG[framework]) + 1] == HF[model]
    else:
        assert HF[model] in argv
    assert "9123" in argv and "127.0.0.1" in argv  # loopback unless told otherwise
    assert spec.ready_path == "/health"
    assert spec.model == HF[model]  # what the server serves the model as


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_docker_tp_override_and_passthrough(framework, tmp_path):
    spec = FRAMEWORKS[framework](LaunchRequest(str(tmp_path), gpus=8, tp=4, port=9000, docker=True,
                                               engine_args=("--extra-flag", "1")))
    argv = spec.argv
    assert argv[:3] == ["docker", "run", "--rm"] and "--gpus" in argv and spec.docker_image in argv
    assert f"{tmp_path}:/model:ro" in argv and "/model" in argv  # a local model is mounted read-only
    assert spec.model == "/model"
    assert argv[argv.index(TP_FLAG[framework]) + 1] == "4" and argv[-2:] == ["--extra-flag", "1"]
    assert "127.0.0.1:9000:" in argv[argv.index("-p") + 1]


def test_engine_cmd_replaces_the_executable():
    spec = FRAMEWORKS["vllm"](LaunchRequest("7b", engine_cmd=("/venv/bin/python",), port=9001))
    assert spec.argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert spec.argv[spec.argv.index("--model") + 1] == HF["7b"]


def test_dry_run_prints_the_command_and_starts_nothing(tmp_path):
    proc = run_loadgen("run", "--backend", "sglang", "--model", "8b", "--gpus", "2", "--dry-run",
                       "--engine-arg=--mem-fraction-static=0.8")
    assert proc.returncode == 0, proc.stderr
    assert f"{sys.executable} -m sglang.launch_server --model-path meta-llama/Meta-Llama-3-8B" in proc.stdout
    assert "--tp 2" in proc.stdout and "--mem-fraction-static=0.8" in proc.stdout
    sweep = tmp_path / "sweep"
    proc = run_loadgen("sweep", "--backend", "lightllm", "--model", "7b", "--qps", "4", "--concurrency", "8",
                       "--dry-run", "--output", str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert "-m lightllm.server.api_server --model_dir meta-llama/Llama-2-7b-hf" in proc.stdout
    assert "# point qps-4: sends for about 35 s" in proc.stdout and "# point concurrency-8" in proc.stdout
    assert not sweep.exists()  # nothing launched, nothing written
    bad = run_loadgen("run", "--backend", "tgi", "--model", "7b", "--endpoint", "completions", "--dry-run")
    assert bad.returncode == 2 and "tgi speaks tgi, chat" in bad.stderr


@pytest.mark.parametrize("backend,endpoint,native", [
    ("tgi", "tgi", "tgi"), ("lightllm", "lightllm", "lightllm"), ("trtllm", "triton", "tgi"),
    ("vllm", "completions", "tgi"),
])
def test_attach_with_each_protocol(tmp_path, backend, endpoint, native):
    server = BackgroundServer([*FIXTURE, "--native", native])
    try:
        out = tmp_path / "run"
        proc = run_loadgen("run", "--backend", backend, "--url", server.url, "--endpoint", endpoint, "--model",
                           "fixture-model", "--qps", "40", "--num-requests", "12", "--output-len", "7",
                           "--input-len", "16", "--output", str(out), "--quiet")
        assert proc.returncode == 0, proc.stderr
        records = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
        assert len(records) == 12 and all(r["status"] == "ok" for r in records)
        assert all(r["output_tokens"] == 7 and len(r["token_times_ms"]) == 7 for r in records)
        run = json.loads((out / "run.json").read_text())
        assert run["backend"]["name"] == backend and run["endpoint"] == endpoint
        assert "launch_command" not in run["backend"]  # attached: nothing launched
    finally:
        server.stop()


def test_protocol_payloads_force_output_length():
    assert protocol_for("lightllm").payload("m", "hi", 9)["parameters"] == {"max_new_tokens": 9, "do_sample": False,
                                                                          "ignore_eos": True}
    assert protocol_for("triton").payload("m", "hi", 9)["max_tokens"] == 9
    assert protocol_for("triton").path_for("ensemble") == "/v2/models/ensemble/generate_stream"
    assert protocol_for("tgi").payload("m", "hi", 9)["parameters"]["max_new_tokens"] == 9


def _launch(tmp_path: Path, *extra: str, wait: bool = True, name: str = "run"):
    out = tmp_path / name
    cmd = [sys.executable, "-m", "loadgen", "run", "--backend", "vllm", "--model", "fixture-model",
           "--engine-cmd", f"{sys.executable} {ROOT / 'tests' / 'protocol_fixture.py'}", "--input-len", "16",
           "--output-len", "8", "--output", str(out), "--quiet", *extra]
    if wait:
        return out, subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return out, subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _launched_pid(out: Path) -> int:
    return json.loads((out / "run.json").read_text())["backend"]["pid"]


def test_launch_through_the_real_adapter_and_stop(tmp_path):
    out, proc = _launch(tmp_path, "--qps", "40", "--num-requests", "20")
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    argv = run["backend"]["launch_command"]
    assert argv[1].endswith("protocol_fixture.py") and argv[2:4] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert run["backend"]["version"] == "fixture-0.0" and run["backend"]["ready_after_s"] > 0
    assert len((out / "requests.jsonl").read_text().splitlines()) == 20
    assert gone(_launched_pid(out))  # the launched server is gone


def test_crash_mid_run_is_recorded_and_leaves_nothing(tmp_path):
    out, proc = _launch(tmp_path, "--qps", "40", "--num-requests", "40", "--engine-arg=--die-after=10")
    assert proc.returncode == 0, proc.stderr
    status = Counter(json.loads(x)["status"] for x in (out / "requests.jsonl").read_text().splitlines())
    # requests 1-10 were served (some were still streaming when request 11 killed the server)
    assert 1 <= status["ok"] <= 10 and sum(status.values()) == 40
    assert status["error:connection"] + status["error:stream"] > 0
    assert gone(_launched_pid(out))


def test_launch_failure_quotes_the_log_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "loadgen", "run", "--backend", "vllm", "--model", "fixture-model",
                           "--engine-cmd", f"{sys.executable} -c 'import sys; print(\"CUDA out of memory\"); sys.exit(7)'",
                           "--output", str(out), "--num-requests", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "exited with code" in proc.stderr and "server.log" in proc.stderr and "CUDA out of memory" in proc.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


def test_ctrl_c_stops_the_launched_server(tmp_path):
    out, proc = _launch(tmp_path, "--qps", "5", "--num-requests", "1000", wait=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "requests.jsonl").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    pid = _launched_pid(out)
    assert _alive(pid)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert gone(pid)


def test_port_already_taken_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out, proc = _launch(tmp_path, "--port", str(port), "--num-requests", "1")
    assert proc.returncode == 2 and f"port {port}" in proc.stderr and "--port" in proc.stderr


def test_histogram_quantiles_and_server_summary_by_hand():
    from loadgen.telemetry.server_metrics import histogram_quantile, parse_metrics, summarize_server_metrics

    # cumulative: 3 obs <= 10 ms, 9 <= 100 ms, 10 in all
    buckets = {0.01: 3.0, 0.1: 9.0, float("inf"): 10.0}
    assert histogram_quantile(0.3, buckets) == pytest.approx(0.01)  # rank 3: top of the first bucket
    assert histogram_quantile(0.6, buckets) == pytest.approx(0.01 + 0.09 * 3 / 6)  # rank 6: half-way
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.1)  # in +Inf: the last finite bound
    text = ('# TYPE vllm:time_to_first_token_seconds histogram\n'
            'vllm:time_to_first_token_seconds_bucket{le="0.01"} %d\n'
            'vllm:time_to_first_token_seconds_bucket{le="0.1"} %d\n'
            'vllm:time_to_first_token_seconds_bucket{le="+Inf"} %d\n'
            'vllm:time_to_first_token_seconds_count %d\nvllm:time_to_first_token_seconds_sum %f\n'
            '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running %d\n')
    rows = [{"values": parse_metrics(text % (1, 2, 2, 2, 0.05, 4))},
            {"values": parse_metrics(text % (4, 11, 12, 12, 0.55, 6))}]
    s = summarize_server_metrics(rows)
    assert s["running"] == {"metric": "vllm:num_requests_running", "mean": 5.0, "max": 6.0}
    ttft = s["server_ttft_ms"]
    assert ttft["requests"] == 10 and ttft["mean"] == pytest.approx(50.0)  # (0.55 - 0.05) / 10 s
    assert ttft["p50"] == pytest.approx((0.01 + 0.09 * 2 / 6) * 1e3)  # deltas 3, 9, 10: rank 5


def test_prefix_cache_hit_rate_from_counter_deltas():
    from loadgen.telemetry.server_metrics import parse_metrics, summarize_server_metrics

    text = ("# TYPE vllm:prefix_cache_queries counter\nvllm:prefix_cache_queries_total %d\n"
            "# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total %d\n")
    rows = [{"values": parse_metrics(text % (1000, 100))}, {"values": parse_metrics(text % (3000, 600))}]
    pc = summarize_server_metrics(rows)["prefix_cache"]
    assert (pc["queried_tokens"], pc["hit_tokens"]) == (2000, 500) and pc["hit_rate"] == pytest.approx(0.25)


def test_lightllm_metrics_give_batch_queue_ttft_and_prefix_cache():
    """LightLLM's own names (from its /metrics on the H200, fc72ffab): batch and queue gauges, the first-token
    histogram in seconds, and the prefix cache from its prompt-length and cached-length histograms' sums."""
    from loadgen.telemetry.server_metrics import parse_metrics, prefix_cache_warning, summarize_server_metrics

    def page(requests: int, ttft_sum: float, input_sum: int, cached_sum: int, batch: int, queue: int) -> str:
        return (
            "# TYPE lightllm_request_first_token_duration histogram\n"
            f'lightllm_request_first_token_duration_bucket{{le="0.1"}} {requests // 2}\n'
            f'lightllm_request_first_token_duration_bucket{{le="1.0"}} {requests}\n'
            f'lightllm_request_first_token_duration_bucket{{le="+Inf"}} {requests}\n'
            f"lightllm_request_first_token_duration_count {requests}\n"
            f"lightllm_request_first_token_duration_sum {ttft_sum}\n"
            "# TYPE lightllm_request_input_length histogram\n"
            f"lightllm_request_input_length_count {requests}\nlightllm_request_input_length_sum {input_sum}\n"
            "# TYPE lightllm_cache_length histogram\n"
            f"lightllm_cache_length_count {requests}\nlightllm_cache_length_sum {cached_sum}\n"
            f"# TYPE lightllm_batch_current_size gauge\nlightllm_batch_current_size {batch}\n"
            f"# TYPE lightllm_queue_size gauge\nlightllm_queue_size {queue}\n")

    rows = [{"values": parse_metrics(page(0, 0.0, 0, 0, 0, 0))},
            {"values": parse_metrics(page(100, 19.0, 51200, 12800, 248, 2))}]
    s = summarize_server_metrics(rows)
    assert s["running"] == {"metric": "lightllm_batch_current_size", "mean": 124.0, "max": 248.0}
    assert s["waiting"]["max"] == 2.0
    assert s["server_ttft_ms"]["requests"] == 100 and s["server_ttft_ms"]["mean"] == pytest.approx(190.0)
    assert s["prefix_cache"]["hit_rate"] == pytest.approx(0.25)
    assert "25% of prompt tokens in its prefix cache" in prefix_cache_warning(s)
    rows[1] = {"values": parse_metrics(page(100, 19.0, 51200, 200, 248, 2))}  # a token or two per prompt
    assert prefix_cache_warning(summarize_server_metrics(rows)) is None


def test_request_phases_from_vllm_histogram_deltas():
    """Mean ms per phase over the run (delta sum / delta count); before_inference = e2e - inference."""
    from loadgen.telemetry.server_metrics import parse_metrics, summarize_server_metrics

    names = {"e2e_request_latency": (2.0, 4.0), "request_inference_time": (1.5, 3.1), "request_prefill_time": (0.2, 0.6),
             "request_queue_time": (0.0, 0.01)}
    def text(i: int, count: int) -> str:
        return "".join(f"# TYPE vllm:{n}_seconds histogram\nvllm:{n}_seconds_count {count}\n"
                       f"vllm:{n}_seconds_sum {v[i]}\n" for n, v in names.items())
    rows = [{"values": parse_metrics(text(0, 10))}, {"values": parse_metrics(text(1, 30))}]
    phases = summarize_server_metrics(rows)["request_phases_mean_ms"]
    assert phases["e2e"] == pytest.approx(100.0) and phases["inference"] == pytest.approx(80.0)
    assert phases["prefill"] == pytest.approx(20.0) and phases["queue"] == pytest.approx(0.5)
    assert phases["before_inference"] == pytest.approx(20.0) and "decode" not in phases


def test_attached_run_scrapes_server_metrics(tmp_path):
    server = BackgroundServer([*FIXTURE])
    try:
        out = tmp_path / "run"
        proc = run_loadgen("run", "--backend", "vllm", "--url", server.url, "--model", "fixture-model", "--qps", "20",
                           "--num-requests", "20", "--output-len", "8", "--scrape-interval", "100ms",
                           "--output", str(out), "--quiet")
        assert proc.returncode == 0, proc.stderr
        lines = (out / "server_metrics.jsonl").read_text().splitlines()
        assert len(lines) >= 5 and "vllm:num_requests_running{model_name=fixture-model}" in json.loads(lines[0])["values"]
        s = json.loads((out / "summary.json").read_text())["server_metrics"]
        assert s["kv_cache_usage"]["mean"] == pytest.approx(0.25)
        assert s["scrapes"] == len(lines)
        # a final scrape after the run: counters cover the last request
        assert json.loads(lines[-1])["values"]["fixture_requests_served_total"] == 20
    finally:
        server.stop()


# -- LightLLM against the real server's code (ModelTC/lightllm fc72ffab, tests/fixtures/lightllm) -----------------
LIGHTLLM_FLAGS = json.loads((ROOT / "tests" / "fixtures" / "lightllm" / "api_cli_flags.json").read_text())


@pytest.mark.parametrize("extra", [{}, {"max_model_len": 4096, "gpus": 2}])
def test_lightllm_argv_uses_only_flags_its_parser_has(extra, tmp_path):
    spec = FRAMEWORKS["lightllm"](LaunchRequest(str(tmp_path), port=9123, **extra))
    flags = LIGHTLLM_FLAGS["flags"]
    args = spec.argv[spec.argv.index("lightllm.server.api_server") + 1:]
    i = 0
    while i < len(args):  # every option is one the server's argparse knows, and each value goes with its flag
        assert args[i] in flags, f"{args[i]} is not a flag of LightLLM at {LIGHTLLM_FLAGS['commit'][:8]}"
        i += 2 if flags[args[i]]["takes_value"] else 1
    assert args[args.index("--model_dir") + 1] == str(tmp_path)
    assert spec.ready_path == "/health" and spec.metrics_path == "/metrics"  # api_http.py routes
    assert spec.endpoints == ("lightllm", "completions")  # its chat request has no ignore_eos
    assert spec.version_paths == () and spec.version_argv[-2] == "-c"


def test_lightllm_make_model_weights_are_what_its_llama_loader_reads(tmp_path):
    """LightLLM's Llama loader (hf_load_utils.load_hf_weights) reads every *.safetensors in the directory by the
    Hugging Face names below, and takes the data type from config.json's torch_dtype."""
    safetensors = pytest.importorskip("safetensors")
    from backends.model_dir import write_model_dir
    from scenarios.catalog import get_model
    spec = get_model("tiny")
    write_model_dir(spec, tmp_path, weights="random")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["torch_dtype"] in ("fp16", "float16", "bf16", "bfloat16", "fp32", "float32")  # its accepted list
    assert config["eos_token_id"] == 2 and config["architectures"] == ["LlamaForCausalLM"]
    names, dtypes = set(), set()
    for f in tmp_path.glob("*.safetensors"):
        with safetensors.safe_open(str(f), "pt") as s:
            for k in s.keys():
                names.add(k)
                dtypes.add(str(s.get_tensor(k).dtype))
    per_layer = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                 "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                 "input_layernorm.weight", "post_attention_layernorm.weight"]  # transformer_layer_weight.py
    wanted = {"model.embed_tokens.weight", "model.norm.weight"}  # pre_and_post_layer_weight.py
    wanted |= {f"model.layers.{i}.{n}" for i in range(spec.num_layers) for n in per_layer}
    if not spec.tie_word_embeddings:
        wanted.add("lm_head.weight")
    assert names == wanted and dtypes == {"torch.bfloat16"}


def test_lightllm_launch_records_the_installed_version_and_puts_site_bin_on_path(tmp_path):
    # an --engine-path folder as `pip install --target` leaves it: the wheel's metadata and a bin/ of scripts
    site = tmp_path / "site"
    dist = site / "lightllm-1.0.1.post154+gfc72ffab.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lightllm\nVersion: 1.0.1.post154+gfc72ffab\n")
    (site / "bin").mkdir()
    out = tmp_path / "run"
    proc = run_loadgen("run", "--backend", "lightllm", "--model", "7b", "--engine-path", str(site),
                       "--engine-cmd", f"{sys.executable} {ROOT / 'tests' / 'protocol_fixture.py'} --native lightllm",
                       "--qps", "40", "--num-requests", "6", "--input-len", "16", "--output-len", "5",
                       "--output", str(out), "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["backend"]["version"] == "1.0.1.post154+gfc72ffab"  # the commit the wheel was built from
    assert run["backend"]["launch_env"]["PATH"].split(":")[0] == str(site / "bin")  # gunicorn is found there
    assert run["endpoint"] == "lightllm"
    records = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["status"] == "ok" and r["output_tokens"] == 5 for r in records)
    # the server's own count of each prompt (its tokens' prompt_tokens), not the length that was asked for
    assert all(r["input_tokens"] == 16 and r["input_tokens_source"] == "usage" for r in records)
