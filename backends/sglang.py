"""SGLang: `python -m sglang.launch_server` with metrics enabled, OpenAI API."""

from __future__ import annotations

import sys

from backends.launch_spec import LaunchRequest, LaunchSpec, docker_argv

IMAGE = "lmsysorg/sglang:latest"


def launch(req: LaunchRequest) -> LaunchSpec:
    model = req.model_ref()
    opts = ["--tp", str(req.tensor_parallel), "--enable-metrics"]
    if req.max_model_len:
        opts += ["--context-length", str(req.max_model_len)]
    if req.docker:
        argv, model = docker_argv(IMAGE, req, 30000, [], shm="32g", entry=["python3", "-m", "sglang.launch_server"])
        argv += ["--model-path", model, "--host", "0.0.0.0", "--port", "30000", *opts, *req.engine_args]
    else:
        exe = list(req.engine_cmd) or [sys.executable]  # the Python running loadgen: `python` may not exist
        argv = [*exe, "-m", "sglang.launch_server", "--model-path", model, "--host", req.host,
                "--port", str(req.port), *opts, *req.engine_args]
    return LaunchSpec("sglang", argv, {}, req.host, req.port, "/health", "/metrics", "completions",
                      ("completions", "chat"), IMAGE if req.docker else None, ("/get_server_info", "/version"), model=model)
