from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from backends.process import find_free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not ready")


def gone(*pids: int | str, timeout: float = 30.0) -> bool:
    """True once none of `pids` exists any more (a dead process may take a moment to be reaped on a busy
    machine: what a test checks is that it goes, not how fast)."""
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class BackgroundServer:
    """A test server in its own process on an ephemeral 127.0.0.1 port, ready when `/health` answers."""

    def __init__(self, argv: list[str]):
        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([*argv, "--port", str(self.port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        try:
            wait_http(self.url + "/health")
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class SimServer(BackgroundServer):
    def __init__(self, *args: str):
        super().__init__([sys.executable, "-m", "backends.sim", *args])


class FaultServerProcess(BackgroundServer):
    """tests/fault_server.py (so it can also be killed mid-run)."""

    def __init__(self, *args: str):
        super().__init__([sys.executable, str(ROOT / "tests" / "fault_server.py"), *args])

    def log(self) -> dict:
        import json

        with urllib.request.urlopen(self.url + "/fault/log", timeout=10) as resp:
            return json.loads(resp.read())


def _server_fixture(cls):
    servers: list[BackgroundServer] = []

    def start(*args: str) -> BackgroundServer:
        s = cls(*args)
        servers.append(s)
        return s

    return start, servers


@pytest.fixture
def start_sim():
    start, servers = _server_fixture(SimServer)
    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def start_fault_server():
    start, servers = _server_fixture(FaultServerProcess)
    yield start
    for s in servers:
        s.stop()


def read_requests(where: Path) -> list[dict]:
    """A run's records: `where` is its directory or its requests.jsonl ([] when nothing was written)."""
    import json

    path = where / "requests.jsonl" if where.is_dir() or where.suffix != ".jsonl" else where
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_loadgen(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadgen", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)

