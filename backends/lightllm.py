"""LightLLM: `python -m lightllm.server.api_server`, native /generate_stream."""

from __future__ import annotations

from backends.launch_spec import LaunchRequest, LaunchSpec, docker_argv

IMAGE = "ghcr.io/modeltc/lightllm:main"


def launch(req: LaunchRequest) -> LaunchSpec:
    model = req.model_ref()
    opts = ["--tp", str(req.tensor_parallel)]
    if req.max_model_len:
        opts += ["--max_req_total_len", str(req.max_model_len)]
    if req.docker:
        argv, model = docker_argv(IMAGE, req, 8000, [], shm="2g", entry=["python", "-m", "lightllm.server.api_server"])
        argv += ["--model_dir", model, "--host", "0.0.0.0", "--port", "8000", *opts, *req.engine_args]
    else:
        exe = list(req.engine_cmd) or ["python"]
        argv = [*exe, "-m", "lightllm.server.api_server", "--model_dir", model, "--host", req.host,
                "--port", str(req.port), *opts, *req.engine_args]
    return LaunchSpec("lightllm", argv, {}, req.host, req.port, "/health", None, "lightllm", ("lightllm", "chat"),
                      IMAGE if req.docker else None, (), model=model)
