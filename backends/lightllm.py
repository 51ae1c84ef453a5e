"""LightLLM: `python -m lightllm.server.api_server`, native /generate_stream (and /v1/completions).

Checked against ModelTC/lightllm at commit fc72ffab (v1.0.1-154, 2025-07-11; `lightllm/server/api_cli.py`,
`api_http.py`, `api_lightllm.py`): flags are snake_case (`--model_dir`, `--tp`, `--max_req_total_len`; the KV
token budget `--max_total_token_num` is derived from `--mem_fraction` when not given, and `--data_type` from
config.json's torch_dtype); `/health` answers 200 only after a 2-token generation succeeds, so it is a real
readiness probe; `/metrics` is Prometheus text (`lightllm_*`); there is no version route, so the version is the
installed distribution's (a wheel built from a commit carries it, e.g. 1.0.1.post154+gfc72ffab). The server
starts its HTTP front end as a `gunicorn` subprocess found on PATH, which is why --engine-path adds SITE/bin too.
Its chat route has no ignore_eos, so only the native and completions endpoints can force the output length.
"""

from __future__ import annotations

import sys

from backends.launch_spec import LaunchRequest, LaunchSpec, docker_argv

IMAGE = "ghcr.io/modeltc/lightllm:main"
MODULE = "lightllm.server.api_server"
_VERSION = "import importlib.metadata as m; print(m.version('lightllm'))"


def launch(req: LaunchRequest) -> LaunchSpec:
    model = req.model_ref()
    opts = ["--tp", str(req.tensor_parallel)]
    if req.max_model_len:
        opts += ["--max_req_total_len", str(req.max_model_len)]
    if req.docker:
        argv, model = docker_argv(IMAGE, req, 8000, [], shm="2g", entry=["python", "-m", MODULE])
        argv += ["--model_dir", model, "--host", "0.0.0.0", "--port", "8000", *opts, *req.engine_args]
        version_argv: tuple[str, ...] = ()
    else:
        exe = list(req.engine_cmd) or [sys.executable]  # the Python running loadgen: `python` may not exist
        argv = [*exe, "-m", MODULE, "--model_dir", model, "--host", req.host, "--port", str(req.port), *opts,
                *req.engine_args]
        version_argv = (*exe, "-c", _VERSION)
    return LaunchSpec("lightllm", argv, {}, req.host, req.port, "/health", "/metrics", "lightllm",
                      ("lightllm", "completions"), IMAGE if req.docker else None, (), model=model,
                      version_argv=version_argv)
