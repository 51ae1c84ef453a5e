"""Secrets are masked by value in everything loadgen writes or prints: after runs given a secret in each of the
ways one arrives, no file of the run directory, and no line of stdout or stderr, holds its value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_loadgen
from loadgen.redaction import MASK, argv_secrets, redact, secret_name, url_secrets

SECRET = "sk-Zq81secretvalue"
FIXTURE = f"{sys.executable} {ROOT / 'tests' / 'protocol_fixture.py'}"


def _holders(directory: Path, proc: subprocess.CompletedProcess, value: str = SECRET) -> list[str]:
    """Every file under `directory`, and stdout/stderr, that contains `value`."""
    found = [str(p) for p in directory.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]
    return found + [name for name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)) if value in text]


def _loadgen(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadgen", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("form", [["--api-key", SECRET], [f"--api-key={SECRET}"]], ids=["separate", "equals"])
def test_api_key_is_masked_in_a_sim_run(tmp_path, form):
    out = tmp_path / "run"
    proc = run_loadgen("run", "--num-requests", "3", "--input-len", "8", "--output-len", "4", "--csv", *form,
                       "--output", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _holders(out, proc) == []
    command = json.loads((out / "run.json").read_text())["environment"]["command"]
    assert MASK in " ".join(command)


def test_openai_api_key_from_the_environment_is_masked(tmp_path):
    out = tmp_path / "run"
    proc = _loadgen("run", "--num-requests", "2", "--input-len", "8", "--output-len", "4", "--json",
                    "--output", str(out), env={"OPENAI_API_KEY": SECRET})
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["api_key_given"] is True
    assert _holders(out, proc) == []


def test_url_userinfo_is_masked_in_run_json_and_console(tmp_path, start_sim):
    sim = start_sim("--model", "tiny")
    url = sim.url.replace("http://", f"http://user:{SECRET}@")
    out = tmp_path / "run"
    proc = run_loadgen("run", "--url", url, "--num-requests", "2", "--input-len", "8", "--output-len", "4",
                       "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert _holders(out, proc) == []
    assert json.loads((out / "run.json").read_text())["backend"]["url"] == sim.url.replace("http://",
                                                                                         "http://user:***@")


def test_failing_url_with_userinfo_is_echoed_without_the_key(tmp_path):
    out = tmp_path / "run"
    proc = run_loadgen("run", "--url", f"http://user:{SECRET}@127.0.0.1:9", "--num-requests", "1",
                       "--output", str(out), timeout=60)
    assert proc.returncode == 2 and "http://user:***@127.0.0.1:9" in proc.stderr, proc.stderr
    assert _holders(out, proc) == []


def test_url_without_scheme_is_echoed_without_the_key(tmp_path):
    proc = run_loadgen("run", "--url", f"user:{SECRET}@localhost:8000", "--output", str(tmp_path / "o"))
    assert proc.returncode == 2 and "needs a scheme" in proc.stderr
    assert SECRET not in proc.stderr


@pytest.mark.parametrize("engine_args", [[f"--engine-arg=--api-key={SECRET}"],
                                         ["--engine-arg=--api-key", f"--engine-arg={SECRET}"],
                                         [f"--engine-arg=--hf-token {SECRET}"]],
                         ids=["equals", "two-engine-args", "one-string"])
def test_engine_key_is_masked_in_the_launch_command(tmp_path, engine_args):
    out = tmp_path / "run"
    proc = run_loadgen("run", "--backend", "vllm", "--model", "fixture-model", "--engine-cmd", FIXTURE,
                       *engine_args, "--input-len", "8", "--output-len", "4", "--num-requests", "2",
                       "--output", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _holders(out, proc) == []
    launch = json.loads((out / "run.json").read_text())["backend"]["launch_command"]
    assert MASK in " ".join(launch)


@pytest.mark.parametrize("engine_args", [[f"--engine-arg=--api-key={SECRET}"],
                                         ["--engine-arg=--api-key", f"--engine-arg={SECRET}"]])
def test_dry_run_masks_engine_keys(engine_args):
    proc = run_loadgen("run", "--backend", "vllm", "--model", "7b", "--dry-run", *engine_args)
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and MASK in proc.stdout


def test_sweep_json_masks_the_key(tmp_path):
    out = tmp_path / "sweep"
    proc = run_loadgen("sweep", "--qps", "50", "--num-requests", "2", "--input-len", "8", "--output-len", "4",
                       "--api-key", SECRET, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "sweep.json").exists() and _holders(out, proc) == []


def test_argv_secrets_know_every_form():
    assert argv_secrets(["--api-key", "a1"]) == {"a1"}
    assert argv_secrets(["--api-key=a2"]) == {"a2"}
    assert argv_secrets(["--engine-arg", "--api-key", "--engine-arg", "a3"]) == {"a3"}
    assert argv_secrets(["--engine-arg=--hf-token=a4"]) == {"a4"}
    assert argv_secrets(["--url", "https://me:a5@host:1/x"]) == {"a5"}
    assert argv_secrets(["--url", "https://a6@host"]) == {"a6"}
    assert argv_secrets(["--max-num-batched-tokens", "8192", "--url", "http://h:1"]) == set()


def test_secret_names():
    for name in ("--api-key", "--hf-token", "HF_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "--db-password",
                 "MY_APIKEY"):
        assert secret_name(name), name
    for name in ("--max-num-batched-tokens", "TOKENIZERS_PARALLELISM", "--model", "--keyboard", "PWD"):
        assert not secret_name(name), name


def test_redact_masks_every_occurrence_and_encoding():
    text = json.dumps({"a": "x abc y", "b": ["abc", "abcdef"], "u": "http://u:p%40ss@h"})
    out = json.loads(redact(text, {"abc", "p@ss"}))
    assert out == {"a": "x *** y", "b": ["***", "abcdef"], "u": "http://u:***@h"}
    assert url_secrets("see http://u:k@h and https://t@g/x") == {"k", "t"}


# -- bind addresses -------------------------------------------------------------------------------------------------
def _listening(port: int) -> set[str]:
    """The local addresses that listen on `port` (from /proc/net/tcp and tcp6: what the kernel really bound)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    found.add(".".join(str(b) for b in bytes.fromhex(address)[::-1]))
                else:
                    found.add("::" if set(address) == {"0"} else address)
    return found


@pytest.mark.parametrize("bind,expected", [(None, "127.0.0.1"), ("127.0.0.2", "127.0.0.2")])
def test_locust_master_binds_its_worker_port_where_told(tmp_path, bind, expected):
    """Locust's own default is every interface; `loadgen locust --master` listens on 127.0.0.1 unless told."""
    pytest.importorskip("locust")
    import time

    from backends.process import find_free_port

    port = find_free_port()
    extra = ["--master-bind-host", bind] if bind else []
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", "locust", "--master", "--headless", "--users", "1",
                             "--run-time", "30s", "--master-port", str(port), "--input-len", "8", "--output-len", "4",
                             "--output", str(tmp_path / "run"), *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline, bound = time.monotonic() + 90, set()
        while not bound and time.monotonic() < deadline and proc.poll() is None:
            bound = _listening(port)
            time.sleep(0.2)
        assert bound == {expected}, bound
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_master_bind_host_help_says_how_to_open_it():
    proc = run_loadgen("locust", "--help")
    assert "--master-bind-host" in proc.stdout and "0.0.0.0" in proc.stdout
