"""Where requests go: start the simulated engine (and always stop it), or attach to a running server by URL."""

from __future__ import annotations

import argparse
import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import aiohttp

from backends import sim as sim_backend
from backends.process import ServerProcess, find_free_port
from backends.sim import SimConfig
from loadgen.errors import LoadgenError
from scenarios.catalog import CatalogError, get_model


@dataclass
class Endpoint:
    url: str
    model: str
    max_context: int
    simulated: bool
    info: dict = field(default_factory=dict)  # for run.json: backend name, launch command, readiness, sim parameters
    server: ServerProcess | None = None

    def kill(self) -> None:
        """Immediate SIGKILL of the launched server's process group (forced exit); no-op when attached by URL."""
        if self.server is not None:
            self.server.kill_now()


def check_url(url: str) -> str:
    if not (url.startswith("http://") or url.startswith("https://")):
        raise LoadgenError(f"--url {url!r} needs a scheme: write http://{url} (or https://)")
    return url.rstrip("/")


def backend_name(opts: argparse.Namespace) -> str:
    if opts.url and opts.backend == "sim":
        raise LoadgenError("--backend sim starts its own server; drop --url, or use --backend openai with --url")
    if opts.backend == "openai" and not opts.url:
        raise LoadgenError("--backend openai needs --url of a running server, e.g. --url http://127.0.0.1:8000")
    if opts.url:
        check_url(opts.url)
        if opts.profile:
            raise LoadgenError("--profile sets the simulated engine's costs; it does not apply to --url")
        return "openai"
    return opts.backend or "sim"


def sim_config(opts: argparse.Namespace) -> SimConfig:
    """Resolve and check the sim's model and GPUs before anything starts (a model that does not fit is a user error)."""
    return sim_backend.build_config(opts.model or "7b", opts.gpu, opts.gpus, profile=opts.profile)


async def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> dict | None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        async with s.get(url, headers=headers or {}) as resp:
            return await resp.json(content_type=None) if resp.status == 200 else None


async def _probe(url: str, headers: dict[str, str]) -> dict | None:
    """GET /v1/models: proves the server is reachable and tells the model id and context when it can."""
    try:
        return await get_json(url + "/v1/models", headers, timeout=10)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise LoadgenError(f"cannot reach {url}: {type(exc).__name__}: {exc}; check --url and that the server is up") from None
    except ValueError:
        return None  # reachable, but /v1/models is not JSON: not an error for a generic server


@asynccontextmanager
async def open_endpoint(opts: argparse.Namespace, config: SimConfig | None, log_dir: Path,
                        headers: dict[str, str]) -> AsyncIterator[Endpoint]:
    server: ServerProcess | None = None
    try:
        info: dict = {"name": backend_name(opts), "simulated": config is not None}
        if config is not None:
            port = find_free_port()
            url = f"http://127.0.0.1:{port}"
            argv = sim_backend.launch_argv(config.model.name, config.gpu.key, config.tp, "127.0.0.1", port,
                                           config.profile.path if config.profile else None)
            server = ServerProcess(argv, log_dir / "server.log", url + "/health",
                                   startup_timeout=opts.startup_timeout, name="simulated engine")
            server.start()
            await server.wait_ready()
            info.update(launch_command=argv, ready_after_s=server.ready_after_s, log=str(log_dir / "server.log"),
                        sim=await get_json(url + "/sim/info"))
        else:
            url = check_url(opts.url)
        info["url"] = url
        listed = ((await _probe(url, headers)) or {}).get("data") or []
        model = opts.model if config is None else config.model.name
        if model is None:
            if not listed:
                raise LoadgenError(f"{url}/v1/models lists no model; pass --model with the id the server serves")
            model = listed[0]["id"]
        max_context = config.model.max_context if config is not None else None
        if max_context is None:
            try:
                max_context = get_model(model).max_context
            except CatalogError:
                served = next((m for m in listed if m.get("id") == model), {})
                max_context = served.get("max_model_len") or 4096
        if opts.max_context:
            max_context = min(opts.max_context, max_context)
        yield Endpoint(url, model, max_context, config is not None, info, server)
    finally:
        if server is not None:
            server.stop()
