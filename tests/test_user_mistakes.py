"""User mistakes for every loadgen and training_bench command (tests/test_bad_input.py holds the first ones, for
`loadgen run`): each ends with exit 2 and exactly one stderr line naming the fix, no traceback, and no run
directory that claims success. Every mistake is found before a server is launched or a load starts, so the cases
run in-process and need no GPU and no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SIM_SMALL = ["--num-requests", "1", "--input-len", "8", "--output-len", "4"]
TRACE_HEAD = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def _file(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _trace(tmp: Path, *times: str) -> str:
    return _file(tmp, "trace.csv", TRACE_HEAD + "".join(f"{t},C,10,5,15,x\n" for t in times))


def _model_dir(tmp: Path, heads: int, kv: int) -> str:
    (tmp / "model").mkdir()
    (tmp / "model" / "config.json").write_text(json.dumps({"num_attention_heads": heads,
                                                            "num_key_value_heads": kv}))
    return str(tmp / "model")


def _scenario(tmp: Path, body: str) -> str:
    return _file(tmp, "s.yaml", "name: x\nversion: 1\ndescription: d\n" + body)


LOADGEN = [
    # (id, argv of tmp_path, what the one line must say)
    ("seed-negative", lambda t: ["run", "--seed", "-1"], "--seed: '-1' must be >= 0"),
    ("output-name-too-long", lambda t: ["run", "--output", str(t / ("a" * 300))], "choose a shorter --output"),
    ("trace-infinite-time", lambda t: ["run", "--arrival", "trace", "--dataset", _trace(t, "5.0", "inf")],
     "trace.csv:3: timestamp 'inf' is not a finite time"),
    ("trace-nan-time", lambda t: ["run", "--arrival", "trace", "--dataset", _trace(t, "nan")],
     "trace.csv:2: timestamp 'nan' is not a finite time"),
    ("trace-negative-time", lambda t: ["run", "--arrival", "trace", "--dataset", _trace(t, "-5", "3")],
     "trace.csv:2: timestamp '-5' is negative"),
    ("trace-negative-after-good-rows", lambda t: ["run", "--arrival", "trace", "--dataset",
                                                  _trace(t, "5", "6", "-3")], "trace.csv:4: timestamp '-3'"),
    ("multi-turn-on-prompts", lambda t: ["run", "--multi-turn", "--dataset", "prompts-sample.jsonl"],
     "--multi-turn needs a conversation dataset"),
    ("dataset-of-unknown-format", lambda t: ["run", "--dataset", _file(t, "d.txt", "hello\n")],
     "pass --dataset-format"),
    ("sim-tp-does-not-divide", lambda t: ["run", "--model", "7b", "--gpus", "3"], "do not split evenly over 3 GPUs"),
    ("sim-more-gpus-than-heads", lambda t: ["run", "--model", "7b", "--gpus", "64"], "only 32 attention heads"),
    ("framework-tp-does-not-divide", lambda t: ["run", "--backend", "vllm", "--model", "7b", "--tp", "3",
                                                "--dry-run"], "--tp 3: llama-2-7b's 32 attention heads"),
    ("framework-gpus-do-not-divide", lambda t: ["run", "--backend", "sglang", "--model", "70b", "--gpus", "6",
                                                "--dry-run"], "use one of 1, 2, 4, 8"),
    ("local-model-kv-heads", lambda t: ["run", "--backend", "vllm", "--model", _model_dir(t, 12, 4), "--tp", "8",
                                        "--dry-run"], "12 attention heads (4 KV heads)"),
    ("url-holds-v1", lambda t: ["run", "--url", "http://127.0.0.1:9/v1"],
     "already holds the API path /v1: give the server's base URL http://127.0.0.1:9"),
    ("url-holds-completions", lambda t: ["run", "--url", "http://127.0.0.1:9/v1/completions/"],
     "already holds the API path /v1/completions"),
    ("url-holds-generate-stream", lambda t: ["run", "--backend", "tgi", "--url", "http://h:1/generate_stream"],
     "already holds the API path /generate_stream"),
    ("url-port-not-a-number", lambda t: ["run", "--url", "http://host:notaport"], "is not a valid URL"),
    ("url-without-host", lambda t: ["run", "--url", "http://"], "has no host"),
    ("url-with-query", lambda t: ["run", "--url", "http://127.0.0.1:9/?a=1"], "give the base URL only"),
    ("qps-infinite", lambda t: ["run", "--qps", "inf"], "--qps: 'inf' must be a finite number"),
    ("qps-overflows", lambda t: ["run", "--qps", "1e400"], "must be a finite number"),
    ("input-len-fraction", lambda t: ["run", "--input-len", "3.5"], "token counts are whole numbers"),
    ("input-len-absurd", lambda t: ["run", "--input-len", "1e99"], "more tokens than any model's context"),
    ("uniform-fraction", lambda t: ["run", "--output-len", "uniform:1.5,9"], "token counts are whole numbers"),
    ("uniform-min-above-max", lambda t: ["run", "--input-len", "uniform:10,5"], "uniform needs 1 <= MIN <= MAX"),
    ("normal-negative-spread", lambda t: ["run", "--input-len", "normal:10,-1"], "non-negative spread"),
    ("lognormal-not-numbers", lambda t: ["run", "--input-len", "lognormal:abc,1"], "numbers expected"),
    ("zero-input-len", lambda t: ["run", "--input-len", "0"], "at least 1 token"),
    ("slo-metric-twice", lambda t: ["run", "--slo", "ttft:500ms,ttft:400ms"], "ttft is given twice"),
    ("slo-without-limit", lambda t: ["run", "--slo", "ttft"], "write METRIC:LIMIT"),
    ("slo-negative", lambda t: ["run", "--slo", "ttft:-5ms"], "use a number with a unit"),
    ("duration-unknown-unit", lambda t: ["run", "--duration", "5parsecs"], "bad duration '5parsecs'"),
    ("duration-nan", lambda t: ["run", "--duration", "nan"], "bad duration 'nan'"),
    ("duration-negative", lambda t: ["run", "--duration=-1s"], "bad duration '-1s'"),
    ("idle-timeout-zero", lambda t: ["run", "--idle-timeout", "0s"], "must be a positive duration"),
    ("startup-timeout-zero", lambda t: ["run", "--startup-timeout", "0s"], "must be a positive duration"),
    ("scrape-interval-zero", lambda t: ["run", "--scrape-interval", "0s"], "must be a positive duration"),
    ("gpu-sample-interval-negative", lambda t: ["run", "--gpu-sample-interval=-1s"], "bad duration '-1s'"),
    ("warmup-negative", lambda t: ["run", "--warmup", "-1"], "--warmup: '-1' must be >= 0"),
    ("max-errors-negative", lambda t: ["run", "--max-errors", "-1"], "--max-errors: '-1' must be >= 0"),
    ("max-error-rate-nan", lambda t: ["run", "--max-error-rate", "nan"], "must be between 0 and 1"),
    ("workers-zero", lambda t: ["run", "--workers", "0"], "give a positive integer or auto"),
    ("workers-word", lambda t: ["run", "--workers", "many"], "give a positive integer or auto"),
    ("gpus-zero", lambda t: ["run", "--gpus", "0"], "--gpus: '0' must be > 0"),
    ("turns-zero", lambda t: ["run", "--turns", "0"], "--turns: '0' must be > 0"),
    ("max-context-zero", lambda t: ["run", "--max-context", "0"], "--max-context: '0' must be > 0"),
    ("time-scale-zero", lambda t: ["run", "--arrival", "trace", "--dataset", "azure-trace-sample.csv",
                                   "--time-scale", "0"], "--time-scale: '0' must be > 0"),
    ("port-above-65535", lambda t: ["run", "--backend", "vllm", "--model", "7b", "--port", "70000", "--dry-run"],
     "is not a TCP port: give 1-65535"),
    ("port-with-the-sim", lambda t: ["run", "--port", "8000"], "--port applies to a launched framework"),
    ("engine-arg-with-the-sim", lambda t: ["run", "--engine-arg=--max-num-seqs=4"], "drop --engine-arg"),
    ("docker-with-the-sim", lambda t: ["run", "--docker"], "drop --docker"),
    ("engine-cmd-with-the-sim", lambda t: ["run", "--engine-cmd", "python"], "drop --engine-cmd"),
    ("tp-with-url", lambda t: ["run", "--url", "http://127.0.0.1:9", "--tp", "2"], "--url attaches to a running"),
    ("engine-arg-as-a-flag", lambda t: ["run", "--engine-arg", "--max-num-seqs=4"], "expected one argument"),
    ("engine-path-missing", lambda t: ["run", "--backend", "vllm", "--model", "7b", "--engine-path",
                                       str(t / "nope"), "--dry-run"], "is not a directory"),
    ("tokenizer-dir-without-one", lambda t: ["run", "--tokenizer", str(t)], "--tokenizer"),
    ("profile-missing", lambda t: ["run", "--profile", str(t / "nope.json")], "nope.json"),
    ("scenario-negative-qps", lambda t: ["run", "--scenario", _scenario(t, "arrival:\n  qps: -1\n")],
     "field 'arrival.qps' must not be negative"),
    ("scenario-is-a-list", lambda t: ["run", "--scenario", _file(t, "l.yaml", "- a\n- b\n")],
     "must be a mapping of fields"),
    ("scenario-is-a-directory", lambda t: ["run", "--scenario", str(t)], "Is a directory"),
    ("sweep-negative-point", lambda t: ["sweep", "--qps", "1,-2"], "must be > 0"),
    ("sweep-nan-point", lambda t: ["sweep", "--qps", "nan"], "must be > 0"),
    ("sweep-zero-users", lambda t: ["sweep", "--concurrency", "0"], "must be > 0"),
    ("sweep-seed-negative", lambda t: ["sweep", "--qps", "1", "--seed", "-1"], "--seed: '-1' must be >= 0"),
    ("sweep-bad-until-slo", lambda t: ["sweep", "--until-slo", "ttft"], "write METRIC:LIMIT"),
    ("sweep-url-holds-v1", lambda t: ["sweep", "--qps", "1", "--url", "http://127.0.0.1:9/v1/"],
     "already holds the API path /v1"),
    ("sweep-tp-does-not-divide", lambda t: ["sweep", "--qps", "1", "--model", "13b", "--gpus", "3"],
     "do not split evenly"),
    ("locust-web-port", lambda t: ["locust", "--web-port", "99999"], "is not a TCP port"),
    ("locust-master-port-zero", lambda t: ["locust", "--master-port", "0"], "--master-port: '0' must be > 0"),
    ("locust-zero-users", lambda t: ["locust", "--headless", "--users", "0", "--run-time", "1s"], "must be > 0"),
    ("locust-master-and-worker", lambda t: ["locust", "--master", "--worker"], "exclude each other"),
    ("locust-empty-bind-host", lambda t: ["locust", "--master", "--master-bind-host", " "],
     "--master-bind-host is empty"),
    ("locust-headless-without-duration", lambda t: ["locust", "--headless", "--users", "2"],
     "--headless needs --concurrency N and --duration"),
    ("locust-url-holds-v1", lambda t: ["locust", "--url", "http://127.0.0.1:9/v1"], "already holds the API path"),
    ("report-missing", lambda t: ["report", str(t / "nope")], "is not a directory"),
    ("report-of-a-file", lambda t: ["report", _file(t, "f", "x")], "is not a directory"),
    ("report-of-an-empty-dir", lambda t: ["report", str(t)], "holds neither a run"),
    ("compare-one-run", lambda t: ["compare", str(t)], "compare needs at least two run directories"),
    ("compare-missing-runs", lambda t: ["compare", str(t / "a$x"), str(t / "b")], "is not a finished run"),
    ("plan-unknown-model", lambda t: ["plan", "--model", "nope"], "unknown model 'nope'"),
    ("plan-without-slo", lambda t: ["plan", "--model", "7b"], "give --slo"),
    ("make-model-unknown", lambda t: ["make-model", "--model", "nope", "--output", str(t / "m")],
     "unknown model 'nope'"),
    ("make-model-under-a-file", lambda t: ["make-model", "--model", "tiny", "--output",
                                           _file(t, "f", "x") + "/m"], "choose another --output"),
    ("make-model-onto-a-file", lambda t: ["make-model", "--model", "tiny", "--output", _file(t, "g", "x")],
     "is a file; give a directory"),
    ("engine-wheels-have-missing", lambda t: ["engine-wheels", "vllm", "--have", str(t / "freeze.txt"),
                                              "--output", str(t / "w")], "give the target's `pip freeze"),
    ("engine-wheels-output-under-a-file", lambda t: ["engine-wheels", "vllm", "--output",
                                                     _file(t, "f", "x") + "/w"], "choose another --output"),
    ("scenarios-show-unknown", lambda t: ["scenarios", "show", "nope"], "unknown scenario 'nope'"),
]

TRAINING = [
    ("pretrain-unknown-model", lambda t: ["pretrain", "--model", "nope"], "unknown model 'nope'"),
    ("pretrain-zero-steps", lambda t: ["pretrain", "--model", "tiny", "--steps", "0"], "--steps must be at least 1"),
    ("pretrain-zero-seq-len", lambda t: ["pretrain", "--model", "tiny", "--seq-len", "0"], "--seq-len must be"),
    ("pretrain-zero-micro-batch", lambda t: ["pretrain", "--model", "tiny", "--micro-batch", "0"],
     "--micro-batch must be at least 1"),
    ("pretrain-zero-grad-accum", lambda t: ["pretrain", "--model", "tiny", "--grad-accum", "0"],
     "--grad-accum must be at least 1"),
    ("pretrain-negative-warmup", lambda t: ["pretrain", "--model", "tiny", "--warmup", "-1"],
     "argument --warmup: '-1' must be at least 0"),
    ("pretrain-zero-layers", lambda t: ["pretrain", "--model", "tiny", "--layers", "0"], "must be at least 1"),
    ("pretrain-too-many-layers", lambda t: ["pretrain", "--model", "tiny", "--layers", "999"], "give 1..2"),
    ("pretrain-tp-on-hf", lambda t: ["pretrain", "--model", "tiny", "--tp", "3"], "--tp applies to --engine megatron"),
    ("pretrain-bad-recompute", lambda t: ["pretrain", "--model", "tiny", "--recompute", "sometimes"],
     "supports none or full"),
    ("pretrain-output-is-a-dir", lambda t: ["pretrain", "--model", "tiny", "--output", str(t)],
     "is a directory; give a file name"),
    ("pretrain-output-under-a-file", lambda t: ["pretrain", "--model", "tiny", "--output",
                                                _file(t, "f", "x") + "/r.json"], "is a file, not a directory"),
    ("pretrain-offload-without-zero", lambda t: ["pretrain", "--model", "tiny", "--offload", "optimizer",
                                                 "--strategy", "single"], "--offload needs DeepSpeed ZeRO"),
    ("finetune-zero-rank", lambda t: ["finetune", "--model", "tiny", "--rank", "0"], "--rank: '0' must be"),
    ("finetune-qlora-on-cpu", lambda t: ["finetune", "--model", "tiny", "--method", "qlora", "--device", "cpu"],
     "needs a CUDA GPU"),
    ("finetune-unknown-model", lambda t: ["finetune", "--model", "nope"], "unknown model 'nope'"),
    ("sweep-from-missing", lambda t: ["sweep", "--from", str(t / "nope.json")], "cannot read it as JSON"),
    ("sweep-from-not-json", lambda t: ["sweep", "--from", _file(t, "f", "x")], "cannot read it as JSON"),
    ("micro-zero-reps", lambda t: ["micro", "ops", "--model", "tiny", "--reps", "0"], "--reps: '0' must be"),
    ("micro-negative-warmup", lambda t: ["micro", "ops", "--model", "tiny", "--warmup", "-1"], "must be at least 0"),
    ("micro-unknown-model", lambda t: ["micro", "ops", "--model", "nope"], "unknown model 'nope'"),
    ("micro-output-under-a-file", lambda t: ["micro", "ops", "--model", "tiny", "--output",
                                             _file(t, "f", "x") + "/o.json"], "is a file, not a directory"),
    ("micro-comm-without-torchrun", lambda t: ["micro", "comm"], "run under torchrun"),
    ("micro-layer-zero-tp", lambda t: ["micro", "layer", "--model", "tiny", "--tp", "0"], "give positive integers"),
    ("micro-profile-output-is-a-dir", lambda t: ["micro", "profile", "--model", "tiny", "--output", str(t)],
     "is a directory"),
]


def _call(main, argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _no_successful_run(tmp: Path) -> None:
    for run_json in tmp.rglob("run.json"):
        assert json.loads(run_json.read_text()).get("status") != "finished", run_json


def _check(code: int, out: str, err: str, needle: str, tmp: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in out + err
    _no_successful_run(tmp)


@pytest.mark.parametrize("args,needle", [(c[1], c[2]) for c in LOADGEN], ids=[c[0] for c in LOADGEN])
def test_loadgen_mistake(tmp_path, capsys, monkeypatch, args, needle):
    from loadgen.cli import main

    monkeypatch.chdir(tmp_path)  # a run directory by default goes to ./results: keep it inside the case
    argv = args(tmp_path)
    if argv[0] in ("run", "sweep", "locust") and "--output" not in argv:
        argv += ["--output", str(tmp_path / "run")]
    if argv[0] in ("run", "sweep"):
        argv[1:1] = SIM_SMALL  # before the case's own flags, which win
    _check(*_call(main, argv, capsys), needle, tmp_path)


@pytest.mark.parametrize("args,needle", [(c[1], c[2]) for c in TRAINING], ids=[c[0] for c in TRAINING])
def test_training_bench_mistake(tmp_path, capsys, monkeypatch, args, needle):
    pytest.importorskip("torch")
    from training_bench.cli import main

    monkeypatch.chdir(tmp_path)
    argv = args(tmp_path)
    if argv[0] in ("pretrain", "finetune") and "--device" not in argv:
        argv += ["--device", "cpu"]  # the same mistake on a machine with a GPU
    _check(*_call(main, argv, capsys), needle, tmp_path)


@pytest.mark.parametrize("argv", [["pretrain", "--model", "tiny"], ["finetune", "--model", "tiny"],
                                  ["micro", "ops", "--model", "tiny"]])
def test_training_bench_without_torch_names_the_extra(tmp_path, argv):
    """torch hidden by a stub on PYTHONPATH whose import fails, as tests/test_cli.py hides matplotlib."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('No module named torch (hidden)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "training_bench", *argv, "--output", str(tmp_path / "r.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "training_bench: error: PyTorch is not importable: pip install -e '.[train]' (or pip install torch)"]
    assert not (tmp_path / "r.json").exists()


def test_a_run_where_every_request_failed_exits_1_and_says_so(tmp_path, start_fault_server):
    """100% errors are not a result: run.json says failed, the last line says why, the exit code is not 0."""
    from conftest import run_loadgen

    server = start_fault_server("--mix", "http500:1")
    out = tmp_path / "run"
    proc = run_loadgen("run", "--url", server.url, "--num-requests", "3", "--output-len", "4",
                       "--output", str(out), "--quiet", timeout=120)
    run = json.loads((out / "run.json").read_text())
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("loadgen: error: every request failed (3 of 3")
    assert run["status"] == "failed" and run["error"].startswith("every request failed")


def test_there_are_at_least_sixty_cases():
    assert len(LOADGEN) + len(TRAINING) >= 60
