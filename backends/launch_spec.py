"""What every framework adapter returns: how to start the server, how to know it is ready, how to talk to it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from backends.errors import BackendError
from scenarios.catalog import CatalogError, get_model


@dataclass(frozen=True)
class LaunchRequest:
    """The user's request: a catalog model, an HF id or a local path; GPUs; TP (default: the GPU count)."""

    model: str
    gpus: int = 1
    tp: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    engine_args: tuple[str, ...] = ()
    engine_cmd: tuple[str, ...] = ()  # replaces the executable, e.g. ("/venv/bin/python",)
    docker: bool = False
    max_model_len: int | None = None

    @property
    def tensor_parallel(self) -> int:
        return self.tp or self.gpus

    def model_ref(self) -> str:
        """A local path (absolute), else a catalog model's HF id, else the string as given (an HF id or a name
        the framework resolves itself; if it cannot, its own error is quoted from server.log)."""
        p = Path(self.model).expanduser()
        if p.exists():
            return str(p.resolve())
        try:
            spec = get_model(self.model)
        except CatalogError:
            return self.model
        if not spec.hf_id:
            raise BackendError(f"catalog model {spec.name} has no Hugging Face id; give a local model directory")
        return spec.hf_id

    @property
    def is_local_path(self) -> bool:
        return Path(self.model).expanduser().exists()


@dataclass(frozen=True)
class LaunchSpec:
    framework: str
    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    ready_path: str
    metrics_path: str | None
    default_endpoint: str
    endpoints: tuple[str, ...]
    docker_image: str | None = None
    version_paths: tuple[str, ...] = ("/version",)
    model: str = ""  # the model reference the server was given (what it serves the model as)
    weights: str = "checkpoint"  # or how the engine made them up (vLLM --load-format dummy)
    # a command that prints the engine's version, for servers with no version route (run with `env`)
    version_argv: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def docker_argv(image: str, req: LaunchRequest, container_port: int, extra: list[str], shm: str | None = None,
                entry: list[str] | None = None) -> tuple[list[str], str]:
    """`docker run` with all GPUs, the port published on the host address, the local model mounted read-only;
    returns the argv and the model reference as seen inside the container."""
    argv = ["docker", "run", "--rm", "--gpus", "all", "--ipc=host", "-p", f"{req.host}:{req.port}:{container_port}"]
    if shm:
        argv += ["--shm-size", shm]
    model = req.model_ref()
    if req.is_local_path:
        argv += ["-v", f"{model}:/model:ro"]
        model = "/model"
    else:
        cache = os.path.expanduser("~/.cache/huggingface")
        argv += ["-v", f"{cache}:/root/.cache/huggingface", "-e", "HF_TOKEN"]
    argv += [*(["--entrypoint", entry[0]] if entry else []), image, *(entry[1:] if entry else []), *extra]
    return argv, model


Adapter = Callable[[LaunchRequest], LaunchSpec]
