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


class SimServer:
    def __init__(self, *args: str):
        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backends.sim", "--port", str(self.port), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            wait_http(self.url + "/health")
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def start_sim():
    servers: list[SimServer] = []

    def start(*args: str) -> SimServer:
        s = SimServer(*args)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def run_loadgen(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadgen", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


class FaultServerProcess:
    """tests/fault_server.py in its own process (so it can also be killed mid-run)."""

    def __init__(self, *args: str):
        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fault_server.py"), "--port", str(self.port),
                                      *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_http(self.url + "/health")

    def log(self) -> dict:
        import json

        with urllib.request.urlopen(self.url + "/fault/log", timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def start_fault_server():
    servers: list[FaultServerProcess] = []

    def start(*args: str) -> FaultServerProcess:
        s = FaultServerProcess(*args)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
