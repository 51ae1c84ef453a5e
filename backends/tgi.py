"""Hugging Face Text Generation Inference: `text-generation-launcher`, native /generate_stream and Messages API."""

from __future__ import annotations

from backends.launch_spec import LaunchRequest, LaunchSpec, docker_argv

IMAGE = "ghcr.io/huggingface/text-generation-inference:latest"


def launch(req: LaunchRequest) -> LaunchSpec:
    model = req.model_ref()
    opts = ["--num-shard", str(req.tensor_parallel)]
    if req.max_model_len:
        opts += ["--max-total-tokens", str(req.max_model_len), "--max-input-tokens", str(req.max_model_len - 1)]
    if req.docker:
        argv, model = docker_argv(IMAGE, req, 80, [], shm="1g")
        argv += ["--model-id", model, *opts, *req.engine_args]
    else:
        exe = list(req.engine_cmd) or ["text-generation-launcher"]
        argv = [*exe, "--model-id", model, "--hostname", req.host, "--port", str(req.port), *opts, *req.engine_args]
    return LaunchSpec("tgi", argv, {}, req.host, req.port, "/health", "/metrics", "tgi", ("tgi", "chat"),
                      IMAGE if req.docker else None, ("/info",), model=model)
