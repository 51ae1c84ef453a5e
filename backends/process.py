"""ServerProcess: start a serving engine in its own process group, wait until it is ready, always stop it; and,
should the launcher die without stopping it (even by SIGKILL), the engine's group stops itself (backends/supervise.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import aiohttp

from backends.errors import BackendError
from backends.supervise import supervised_argv


def find_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) if text else "(log is empty)"


class ServerProcess:
    """Lifecycle of one launched server. Use as a context manager, or call start/stop in try/finally.

    The process group's leader is a supervisor (backends/supervise.py) that runs `argv` in the group and stops the
    group when this process dies; `supervise=False` for an engine of one process that watches its parent itself
    (the simulated engine's --exit-with-parent), which saves starting an interpreter. Call start() from a thread
    that lives as long as the server (the main thread): Linux's parent-death signal follows the thread."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        ready_url: str,
        env: dict[str, str] | None = None,
        startup_timeout: float = 600.0,
        name: str = "server",
        supervise: bool = True,
    ):
        if not argv or not all(isinstance(a, str) for a in argv):
            raise BackendError("launch command must be a non-empty argv list of strings")
        self.argv = argv
        self.log_path = log_path
        self.ready_url = ready_url
        self.env = env
        self.startup_timeout = startup_timeout
        self.name = name
        self.supervise = supervise
        self.proc: subprocess.Popen | None = None
        self.ready_after_s: float | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = {**os.environ, **(self.env or {})}
        if self.supervise and not _executable(self.argv[0], env):
            log.close()
            raise BackendError(f"cannot start {self.name} ({self.argv[0]}): no such executable file (check the "
                               "command, or PATH)")
        argv = supervised_argv(self.argv, os.getpid()) if self.supervise else self.argv
        try:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot start {self.name} ({self.argv[0]}): {exc.strerror}") from None
        finally:
            log.close()
        self._started = time.monotonic()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_ready(self, poll_interval: float = 0.2) -> float:
        """Seconds until ready; raises BackendError quoting the log if the server exits or never answers."""
        assert self.proc is not None, "start() first"
        deadline = self._started + self.startup_timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise BackendError(
                        f"{self.name} exited with code {code} before it was ready; last lines of "
                        f"{self.log_path}:\n{log_tail(self.log_path)}"
                    )
                try:
                    async with session.get(self.ready_url) as resp:
                        if resp.status == 200:
                            self.ready_after_s = time.monotonic() - self._started
                            return self.ready_after_s
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"{self.name} not ready at {self.ready_url} after {self.startup_timeout:g} s "
                        f"(raise --startup-timeout if it is still loading); last lines of {self.log_path}:\n"
                        f"{log_tail(self.log_path)}"
                    )
                await asyncio.sleep(poll_interval)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the whole process group, then SIGKILL after grace_s. Safe to call twice."""
        if self.proc is None:
            return
        try:
            pgid = os.getpgid(self.proc.pid)
        except ProcessLookupError:
            pgid = None
        if pgid is not None:
            for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    # The leader is gone; make sure no child of the group lingers either.
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
                break
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if pgid is not None:
            _wait_group_gone(pgid, 5.0)

    def kill_now(self) -> None:
        """SIGKILL the process group for a forced exit; waits at most 2 s, to reap the leader (our child: left
        unreaped it would linger as a zombie after we exit, until init gets to it)."""
        if self.proc is not None:
            try:
                os.killpg(os.getpgid(self.proc.pid), signal.SIGKILL)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _executable(program: str, env: dict[str, str]) -> bool:
    """What exec would find: the supervisor reports a missing program only in the log, after the launch."""
    if os.sep in program:
        return os.path.isfile(program) and os.access(program, os.X_OK)
    return shutil.which(program, path=env.get("PATH", os.defpath)) is not None


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Children SIGKILLed with the group exit asynchronously (their reaper is init): wait until none is left, so a
    caller that returns has really stopped the server (its memory and ports are free)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        time.sleep(0.02)
    return False
