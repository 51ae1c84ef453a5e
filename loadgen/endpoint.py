"""Where requests go: start the simulated engine (and always stop it), or attach to a running server by URL."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import AsyncIterator

import aiohttp

from backends.launch_spec import LaunchRequest, LaunchSpec
from backends.process import ServerProcess, find_free_port, port_in_use
from backends.registry import FRAMEWORKS, adapter
from backends.sim import command as sim_backend
from backends.sim.config import SimConfig
from loadgen.config import RunConfig, TargetConfig
from loadgen.errors import LoadgenError
from loadgen.interrupts import INTERRUPTS
from loadgen.redaction import remember_env
from scenarios.catalog import CatalogError, get_model


@dataclass
class Endpoint:
    url: str
    model: str
    max_context: int
    simulated: bool
    info: dict = field(default_factory=dict)  # for run.json: backend name, launch command, readiness, sim parameters
    server: ServerProcess | None = None
    protocol_name: str = "completions"
    metrics_url: str | None = None


def launch_spec(target: TargetConfig, max_context: int | None, port: int | None = None) -> LaunchSpec:
    """The framework's launch command for this target (for --dry-run, launching, and attaching)."""
    req = LaunchRequest(model=target.model or os.sep, gpus=target.gpus, tp=target.tp, host="127.0.0.1",
                        port=port or target.port or 8000, engine_args=target.engine_arg,
                        engine_cmd=tuple(shlex.split(target.engine_cmd)) if target.engine_cmd else (),
                        docker=target.docker, max_model_len=max_context)
    spec = adapter(target.backend)(req)
    remember_env(spec.env)  # masked wherever the launch environment is written or printed
    paths = target.engine_path
    if paths:
        missing = [p for p in paths if not os.path.isdir(os.path.expanduser(p))]
        if missing:
            raise LoadgenError(f"--engine-path {missing[0]} is not a directory; give the folder the engine's wheels "
                               "were installed into (pip install --target DIR)")
        sites = [os.path.abspath(os.path.expanduser(p)) for p in paths]
        current = os.environ.get("PYTHONPATH")
        env = {**spec.env, "PYTHONPATH": os.pathsep.join(sites + ([current] if current else []))}
        # `pip install --target SITE` puts console scripts in SITE/bin; LightLLM starts `gunicorn` by name
        bins = [os.path.join(s, "bin") for s in sites if os.path.isdir(os.path.join(s, "bin"))]
        if bins:
            env["PATH"] = os.pathsep.join(bins + [os.environ.get("PATH", os.defpath)])
        spec = replace(spec, env=env)
    return spec


def endpoint_name(target: TargetConfig, spec: LaunchSpec | None) -> str:
    name = target.endpoint or (spec.default_endpoint if spec else "completions")
    if spec is not None and name not in spec.endpoints:
        raise LoadgenError(f"{target.backend} speaks {', '.join(spec.endpoints)}, not --endpoint {name}")
    return name


def sim_config(target: TargetConfig) -> SimConfig | None:
    """The sim's model and GPUs, resolved and checked before anything starts (a model that does not fit is a user
    error); None when the target is not the embedded sim."""
    if target.backend != "sim":
        return None
    return sim_backend.build_config(target.model or "7b", target.gpu, target.gpus, profile=target.profile)


async def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> dict | None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        async with s.get(url, headers=headers or {}) as resp:
            return await resp.json(content_type=None) if resp.status == 200 else None


async def _probe(url: str, headers: dict[str, str], required: bool = True) -> dict | None:
    """GET /v1/models: proves the server is reachable and tells the model id and context when it can.
    Frameworks without an OpenAI API (TGI's native one, Triton) may answer 404: that is fine for them."""
    try:
        return await get_json(url + "/v1/models", headers, timeout=10)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        if not required and not isinstance(exc, (aiohttp.ClientConnectorError, OSError)):
            return None
        raise LoadgenError(f"cannot reach {url}: {type(exc).__name__}: {exc}; check --url and that the server is up") from None
    except ValueError:
        return None  # reachable, but /v1/models is not JSON: not an error for a generic server


async def _engine_version(spec: LaunchSpec) -> str | None:
    """The version the engine's own interpreter reports (spec.version_argv), for servers without a version route."""
    try:
        proc = await asyncio.create_subprocess_exec(*spec.version_argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL,
                                                    env={**os.environ, **spec.env})
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    except asyncio.TimeoutError:
        return None
    finally:
        if proc.returncode is None:  # timed out, or the run was stopped meanwhile: leave nothing behind
            proc.kill()
            await asyncio.shield(proc.wait())
    lines = out.decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if proc.returncode == 0 and lines else None


async def _sim_identity(url: str, headers: dict[str, str]) -> dict | None:
    """The sim's /sim/info when the target is dissect's simulated engine, whatever the flags said: a run against
    `loadgen serve-sim --url ...` must be labelled simulated like one against `--backend sim`."""
    try:
        data = await get_json(url + "/sim/info", headers, timeout=5)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("simulated") is True and "cost_model" in data else None


async def _server_version(url: str, spec: LaunchSpec, launched: bool = True) -> str | None:
    if spec.version_argv and not spec.version_paths:
        # attached by URL, the local install says which server runs only when --engine-path names it
        return await _engine_version(spec) if launched or "PYTHONPATH" in spec.env else None
    for path in spec.version_paths:
        try:
            data = await get_json(url + path, timeout=5)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
            continue
        if isinstance(data, dict):
            for key in ("version", "server_version"):
                if isinstance(data.get(key), str):
                    return data[key]
    return None


@asynccontextmanager
async def open_endpoint(run: RunConfig, config: SimConfig | None, log_dir: Path,
                        headers: dict[str, str]) -> AsyncIterator[Endpoint]:
    """The target of `run`, launched (and always stopped) or attached; `config` is sim_config(run.target)."""
    server: ServerProcess | None = None
    target = run.target
    forced = ExitStack()  # a second stop signal kills the launched engine's group before exiting
    try:
        INTERRUPTS.enter("launching")
        backend = target.backend
        info: dict = {"name": backend, "simulated": config is not None}
        spec: LaunchSpec | None = None
        if config is not None:
            for warning in config.warnings:  # before the run, not after hours of it
                print(f"warning: {warning}", file=sys.stderr)
            port = find_free_port()
            url = f"http://127.0.0.1:{port}"
            argv = sim_backend.launch_argv(config.model.name, config.gpu.key, config.tp, "127.0.0.1", port,
                                           config.profile.path if config.profile else None, parent_pid=os.getpid())
            # One process that watches its parent itself (--exit-with-parent): no supervisor needed.
            server = ServerProcess(argv, log_dir / "server.log", url + "/health",
                                   startup_timeout=target.startup_timeout or 120.0, name="simulated engine",
                                   supervise=False)
            server.start()
            forced.enter_context(INTERRUPTS.on_force(server.kill_now))
            await INTERRUPTS.reach_async("launching")
            INTERRUPTS.enter("waiting for readiness")
            await server.wait_ready()
            info.update(launch_command=argv, ready_after_s=server.ready_after_s, log=str(log_dir / "server.log"),
                        pid=server.proc.pid if server.proc else None, sim=await get_json(url + "/sim/info"))
        elif backend in FRAMEWORKS and not target.url:
            if target.port and port_in_use("127.0.0.1", target.port):
                raise LoadgenError(f"port {target.port} on 127.0.0.1 is already in use; choose another --port or stop "
                                   "what holds it")
            spec = launch_spec(target, run.workload.max_context, target.port or find_free_port())
            url = spec.url
            server = ServerProcess(spec.argv, log_dir / "server.log", url + spec.ready_path, env=spec.env,
                                   startup_timeout=target.startup_timeout or 1800.0, name=backend)
            server.start()
            forced.enter_context(INTERRUPTS.on_force(server.kill_now))
            await INTERRUPTS.reach_async("launching")
            INTERRUPTS.enter("waiting for readiness")
            await server.wait_ready()
            info.update(launch_command=spec.argv, launch_env=spec.env, ready_after_s=server.ready_after_s,
                        pid=server.proc.pid if server.proc else None,
                        log=str(log_dir / "server.log"), docker_image=spec.docker_image, weights=spec.weights,
                        version=await _server_version(url, spec))
        else:
            INTERRUPTS.enter("connecting")
            url = target.url
            if backend in FRAMEWORKS:
                spec = launch_spec(target, run.workload.max_context)
                info["version"] = await _server_version(url, spec, launched=False)
        info["url"] = url
        simulated = config is not None
        if not simulated:
            sim = await _sim_identity(url, headers)
            if sim is not None:  # `loadgen serve-sim` (or any server answering as it): its figures are simulated
                simulated = True
                info.update(simulated=True, sim=sim, detected="the server answers /sim/info as dissect's "
                                                              "simulated engine")
        protocol_name = endpoint_name(target, spec)
        info["endpoint"] = protocol_name
        listed = ((await _probe(url, headers, required=spec is None)) or {}).get("data") or []
        model = target.model if config is None else config.model.name
        if spec is not None and listed:
            model = listed[0]["id"]  # what the framework serves the model as
        elif spec is not None and not target.url:
            model = spec.model
        if model is None:
            if not listed:
                raise LoadgenError(f"{url}/v1/models lists no model; pass --model with the id the server serves")
            model = listed[0]["id"]
        max_context = config.model.max_context if config is not None else None
        if max_context is None:
            try:
                max_context = get_model(target.model).max_context if target.model else None
            except CatalogError:
                max_context = None
            if max_context is None:
                served = next((m for m in listed if m.get("id") == model), {})
                max_context = served.get("max_model_len") or 4096
        if run.workload.max_context:
            max_context = min(run.workload.max_context, max_context)
        metrics = url + spec.metrics_path if spec is not None and spec.metrics_path else None
        if config is not None:
            metrics = url + "/metrics"
        INTERRUPTS.enter("preparing the workload")
        yield Endpoint(url, model, max_context, simulated, info, server, protocol_name, metrics)
        INTERRUPTS.enter("stopping the engine")
    finally:
        if server is not None:
            server.stop()
        forced.close()
