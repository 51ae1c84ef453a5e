"""What code a measurement ran: the checkout's commit, whether its tracked files were edited since, and the
versions of the libraries that did the work. Both loadgen's run.json and training_bench's results record it (the
one layer they share), so a figure can be traced to the code and packages that produced it."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent


def _git(where: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_sha(where: Path = CHECKOUT) -> str | None:
    out = _git(where, "rev-parse", "HEAD")
    return (out.strip() or None) if out is not None else None


def git_dirty(where: Path = CHECKOUT) -> bool | None:
    """Whether tracked files differ from git_sha: a run from an edited tree did not run that commit (None
    outside a git checkout). Untracked files are not code that ran."""
    out = _git(where, "status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed distribution versions (None: not installed), read from metadata without importing them."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_version(where: Path = CHECKOUT) -> dict:
    return {"git_sha": git_sha(where), "git_dirty": git_dirty(where), "python": sys.version.split()[0]}
