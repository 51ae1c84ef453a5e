"""The run directory: run.json (everything needed to reproduce and explain the run), then the results."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loadgen.errors import LoadgenError
from loadgen.redaction import redact
from scenarios.provenance import git_dirty, git_sha

TOOL_VERSION = "0.1.0"
RUN_FILES = ("run.json", "requests.jsonl", "summary.json", "sweep.json")  # what makes a directory a run's


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def create_run_dir(output: str | None, backend: str, model: str) -> Path:
    if output:
        path = Path(output)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("results") / f"{stamp}-{slug(backend)}-{slug(Path(model).name)}"
    held = [name for name in RUN_FILES if (path / name).exists()]
    if held:  # records would be appended to another run's, and its summary overwritten
        raise LoadgenError(f"--output {path} already holds a run ({held[0]}); choose another directory or remove it")
    return writable_dir(path)


def writable_dir(path: Path, flag: str = "--output") -> Path:
    """`path` created if need be and proven writable, or one line naming the fix (a file where a directory
    should be, a name too long for the file system, no permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise LoadgenError(f"cannot write to {flag} {path}: {exc.strerror or exc}; choose another {flag}") from None
    return path


def write_json(path: Path, data: Any) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file. Every secret's value is masked
    (loadgen/redaction.py): run.json, summary.json and sweep.json all come through here."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(redact(json.dumps(data, indent=2, sort_keys=False, default=str)) + "\n")
    os.replace(tmp, path)


def environment() -> dict:
    return {
        "tool": "dissect loadgen",
        "tool_version": TOOL_VERSION,
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "command": list(sys.argv),  # masked by write_json
    }


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

