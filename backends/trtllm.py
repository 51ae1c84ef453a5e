"""TensorRT-LLM: `trtllm-serve` (OpenAI API); Triton's generate_stream when attached by --url --endpoint triton."""

from __future__ import annotations

from backends.launch_spec import LaunchRequest, LaunchSpec, docker_argv

IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:latest"


def launch(req: LaunchRequest) -> LaunchSpec:
    model = req.model_ref()
    opts = ["--tp_size", str(req.tensor_parallel)]
    if req.max_model_len:
        opts += ["--max_seq_len", str(req.max_model_len)]
    if req.docker:
        argv, model = docker_argv(IMAGE, req, 8000, [], shm="1g", entry=["trtllm-serve"])
        argv += [model, "--host", "0.0.0.0", "--port", "8000", *opts, *req.engine_args]
    else:
        exe = list(req.engine_cmd) or ["trtllm-serve"]
        argv = [*exe, model, "--host", req.host, "--port", str(req.port), *opts, *req.engine_args]
    return LaunchSpec("trtllm", argv, {}, req.host, req.port, "/health", "/metrics", "completions",
                      ("completions", "chat", "triton"), IMAGE if req.docker else None, ("/version",), model=model)
