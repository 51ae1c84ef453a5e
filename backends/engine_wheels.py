"""Wheels for an engine on a machine without internet: resolve for the target's Python and platform, leave out
what the target already has, download the rest into one folder.

pip does the resolving (`install --dry-run --report`) and the downloading (`download --no-deps`); what is ours is
the `--have` handling: the target's installed packages become constraints (so the resolution is the one that
installs cleanly there, e.g. vLLM against the machine's torch) and are then left out of the download. Two
exceptions, for engines that are not on the index or that need older libraries than the target has: a local wheel
or source tree is resolved like a package and copied (or built) into the folder, and a requirement pinned with ==
to another version than the target's is carried, to shadow the target's copy on the engine's PYTHONPATH (LightLLM
imports transformers 4.x APIs; the GPU image has transformers 5).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backends.errors import BackendError

DEFAULT_PLATFORMS = ("manylinux_2_35_x86_64",)  # glibc 2.35 (Ubuntu 22.04) and every older manylinux tag
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def expand_platform(tag: str) -> list[str]:
    """pip matches --platform literally; a machine with glibc 2.N also runs every older manylinux wheel."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag)
    if not m:
        return [tag]
    glibc, arch = int(m.group(1)), m.group(2)
    tags = []
    for minor in range(glibc, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in LEGACY_MANYLINUX:
            tags.append(f"{LEGACY_MANYLINUX[minor]}_{arch}")
    return tags


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_have(path: Path) -> dict[str, str]:
    """`pip freeze` / `pip list --format=freeze` output: name -> version (local labels such as +cu130 dropped, since
    the index knows the public version). Lines that are not `name==version` (editable installs, URLs) are skipped."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BackendError(f"cannot read --have {path}: {exc.strerror}; give the target's `pip freeze` output") from None
    have: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;+]+)(?:\+\S+)?", line)
        if m:
            have[canonical_name(m.group(1))] = m.group(2)
    return have


@dataclass(frozen=True)
class WheelSet:
    out: Path
    wheels: tuple[str, ...]  # file names in out
    pins: tuple[str, ...]  # name==version of every downloaded package
    skipped: tuple[str, ...]  # resolved, but the target already has them
    total_bytes: int
    # why the target's versions could not be kept as constraints, and how many then differ from a fresh
    # resolution (the target's are kept: the wheels install with --no-deps)
    conflict: str | None = None
    differing: int = 0
    excluded: tuple[str, ...] = ()
    local: tuple[str, ...] = ()  # wheels copied or built from a local path (not downloaded)
    replaced: tuple[str, ...] = ()  # name==version carried although the target has another version


def _target_args(python: str, platforms: tuple[str, ...]) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for p in dict.fromkeys(t for tag in platforms for t in expand_platform(tag)):
        args += ["--platform", p]
    return args


def _pip(args: list[str], what: str, on_line: Callable[[str], None] | None = None) -> None:
    """pip in a child process; with `on_line`, each line of pip's output is handed over as it is printed (a large
    engine's download takes minutes, and a silent command looks hung)."""
    if on_line is None:
        proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        with subprocess.Popen([sys.executable, "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as child:
            lines = []
            for line in child.stdout:
                lines.append(line)
                on_line(line.rstrip("\n"))
            stderr = child.stderr.read()
            returncode, stdout = child.wait(), "".join(lines)
    if returncode != 0:
        lines = [ln for ln in stderr.splitlines() if ln.strip() and "is ignored: it is neither" not in ln]
        tail = lines[-1] if lines else f"pip exited with {returncode}"
        cause = stdout.split("The conflict is caused by:", 1)
        if len(cause) == 2:  # name the conflicting pins rather than pip's generic last line
            tail = "; ".join(ln.strip() for ln in cause[1].strip().split("\n\n", 1)[0].splitlines())
        raise BackendError(f"{what} failed: {tail}")


_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;,]+)")


def wheel_name(path: Path) -> tuple[str, str]:
    """(name, version) from a wheel file name (PEP 427: name-version-...-tag.whl)."""
    parts = path.name[:-len(".whl")].split("-")
    if len(parts) < 5:
        raise BackendError(f"{path.name} is not a wheel file name (name-version-python-abi-platform.whl)")
    return parts[0], parts[1]


def build_wheel(source: Path, out: Path) -> Path:
    """A wheel of a source tree (setup.py or pyproject.toml) with the build tools installed here: no build
    isolation, so it works offline, as the DeepSpeed wheel for the GPU machine was built."""
    if not ((source / "setup.py").is_file() or (source / "pyproject.toml").is_file()):
        raise BackendError(f"{source} has neither setup.py nor pyproject.toml; give a Python source tree, a .whl "
                           "file or a package name")
    with tempfile.TemporaryDirectory() as tmp:
        _pip(["wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", tmp, str(source)],
             f"building a wheel from {source}")
        built = list(Path(tmp).glob("*.whl"))
        if len(built) != 1:
            raise BackendError(f"building {source} gave {len(built)} wheels, expected one")
        out.mkdir(parents=True, exist_ok=True)
        dest = out / built[0].name
        shutil.copyfile(built[0], dest)
    return dest


def local_wheels(requirements: list[str], out: Path) -> tuple[list[str], dict[str, Path]]:
    """Requirements with local paths turned into wheels in `out` (built from a source tree, or copied), and those
    wheels by canonical name. Names that are not paths pass through."""
    resolved: list[str] = []
    local: dict[str, Path] = {}
    for req in requirements:
        path = Path(req).expanduser()
        if path.is_dir():
            wheel = build_wheel(path.resolve(), out)
        elif req.endswith(".whl"):
            if not path.is_file():
                raise BackendError(f"wheel {req} does not exist; give the path of a .whl file, a source directory "
                                   "or a package name such as vllm==0.22.0")
            wheel_name(path)
            out.mkdir(parents=True, exist_ok=True)
            wheel = out / path.name
            if path.resolve() != wheel.resolve():
                shutil.copyfile(path, wheel)
        else:
            resolved.append(req)
            continue
        local[canonical_name(wheel_name(wheel)[0])] = wheel
        resolved.append(str(wheel.resolve()))
    return resolved, local


def resolve(requirements: list[str], python: str, platforms: tuple[str, ...],
            have: dict[str, str]) -> list[tuple[str, str]]:
    """(name, version) of everything the requirements need on the target, the target's own versions pinned."""
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "have.txt"
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in have.items()))
        report = Path(tmp) / "report.json"
        _pip(["install", "--dry-run", "--ignore-installed", "--report", str(report),
              "--target", str(Path(tmp) / "target"), *_target_args(python, platforms), "-c", str(constraints),
              *requirements], f"resolving {' '.join(requirements)} for Python {python}")
        data = json.loads(report.read_text())
    return [(item["metadata"]["name"], item["metadata"]["version"]) for item in data.get("install", [])]


def download_engine(requirements: list[str], out: Path, python: str = "3.12",
                    platforms: tuple[str, ...] = DEFAULT_PLATFORMS, have: dict[str, str] | None = None,
                    exclude: tuple[str, ...] = (), progress: Callable[[str], None] | None = None) -> WheelSet:
    """`progress`, when given, is told each phase and each downloaded wheel as it happens."""
    say = progress or (lambda _msg: None)
    if not re.fullmatch(r"3\.\d+", python):
        raise BackendError(f"--python {python!r}: give the target's Python as MAJOR.MINOR, e.g. 3.12")
    have = dict(have or {})
    requirements, local = local_wheels(requirements, out)
    pinned = {canonical_name(m.group(1)): m.group(2) for r in requirements if (m := _PIN.fullmatch(r.strip()))}
    replaced = tuple(sorted(f"{n}=={v}" for n, v in pinned.items() if n in have and have[n] != v))
    for name in [*local, *(r.split("==")[0] for r in replaced)]:
        have.pop(name, None)  # carried: the target's copy is shadowed, so it is no constraint
    conflict = None
    say(f"resolving {' '.join(requirements)} for CPython {python} (pip --dry-run: a minute or more for an engine)")
    try:
        resolved = resolve(requirements, python, platforms, have)
    except BackendError as exc:
        if not have:
            raise
        # The target's packages break one of the engine's exact pins (vLLM 0.22.0 pins numba==0.65.0; the H100
        # machine has 0.68.0 and vLLM runs there). Resolve freely, keep the target's versions, and say so.
        conflict = str(exc).split("failed: ", 1)[-1]
        resolved = resolve(requirements, python, platforms, {})
    differing = sum(1 for n, v in resolved if canonical_name(n) in have and have[canonical_name(n)] != v)
    dropped = {canonical_name(e) for e in exclude}
    excluded = tuple(sorted(n for n, _ in resolved if canonical_name(n) in dropped))
    wanted = [(n, v) for n, v in resolved if canonical_name(n) not in have and canonical_name(n) not in dropped]
    skipped = tuple(sorted(f"{n}=={v}" for n, v in resolved if canonical_name(n) in have))
    out.mkdir(parents=True, exist_ok=True)
    pins = [f"{n}=={v}" for n, v in wanted]
    to_download = [f"{n}=={v}" for n, v in wanted if canonical_name(n) not in local]
    if to_download:
        say(f"downloading {len(to_download)} wheels into {out} ({len(skipped)} left out: the target has them)")
        saved = 0

        def on_line(line: str) -> None:
            nonlocal saved
            if line.startswith(("Saved ", "File was already downloaded ")):
                saved += 1
                say(f"  {saved}/{len(to_download)} {Path(line.split(maxsplit=1)[-1].split()[-1]).name}")

        _pip(["download", "--no-deps", "--progress-bar", "off", "-d", str(out), *_target_args(python, platforms),
              *to_download], "downloading wheels", on_line if progress else None)
    names = {canonical_name(n) for n, _ in wanted}
    wheels = sorted(p.name for p in out.glob("*.whl") if canonical_name(p.name.split("-")[0]) in names)
    (out / "requirements.txt").write_text(
        f"# {' '.join(requirements)} for CPython {python} on {', '.join(platforms)}; "
        f"left out (the target has them): {len(skipped)}\n"
        + (f"# the target's versions conflict with the engine's pins ({conflict}); kept the target's, "
           f"{differing} differ from a fresh resolution\n" if conflict else "")
        + (f"# left out on request: {', '.join(excluded)}\n" if excluded else "")
        + (f"# carried although the target has another version (shadows it on PYTHONPATH): {', '.join(replaced)}\n"
           if replaced else "")
        + (f"# local wheels (not on the index): {', '.join(p.name for p in local.values())}\n" if local else "")
        + "".join(p + "\n" for p in pins))
    total = sum((out / w).stat().st_size for w in wheels)
    return WheelSet(out, tuple(wheels), tuple(pins), skipped, total, conflict, differing, excluded,
                    tuple(p.name for p in local.values()), replaced)
