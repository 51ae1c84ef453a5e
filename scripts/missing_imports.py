"""Which modules an engine imports, anywhere in its code, that the target machine will not have.

An import check (`python -c "import lightllm.server.api_server"`) only runs module-level imports; engines import
much of what they need inside functions, at the first request (LightLLM imports `interegular` when it builds the
sampling parameters of its own health check, so a server whose imports all succeed never becomes ready). This
reads every import of every module of the wheels or source trees given (ast: module level, functions, try
blocks) and lists the top-level modules that are neither the standard library, nor the engine's own, nor provided
by a distribution of `--have` (`pip freeze` of the target) or of the carried wheels. An import inside a `try`
that catches ImportError (or Exception) and does not raise again is an optional one and is listed apart. Lines of
`--have` installed from local files (`name @ file:///...`) are not counted: they were carried onto the machine
the freeze was taken on (its PYTHONPATH), not part of its image.

    python scripts/missing_imports.py .stage-lightllm/lightllm-*.whl --carried .stage-lightllm \
        --have results/h200-pip-freeze.txt
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

# distributions whose import name is not their name, among those engines use
IMPORT_NAMES = {"pyzmq": ["zmq"], "pyyaml": ["yaml"], "protobuf": ["google"], "pillow": ["PIL"],
                "opencv-python-headless": ["cv2"], "scikit-learn": ["sklearn"], "scikit-image": ["skimage"],
                "nvidia-ml-py": ["pynvml"], "python-dateutil": ["dateutil"], "attrs": ["attr", "attrs"],
                "cupy-cuda13x": ["cupy"], "py-cpuinfo": ["cpuinfo"], "opentelemetry-api": ["opentelemetry"],
                "nvidia-nccl-cu13": ["nvidia"]}  # every other distribution imports as its name with '_' for '-'


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def provided_by_freeze(path: Path) -> set[str]:
    mods: set[str] = set()
    for line in path.read_text().splitlines():
        name = re.split(r"[=<>@ ]", line.strip(), maxsplit=1)[0]
        if not name or name.startswith("#") or "@ file://" in line:
            continue
        mods.update(IMPORT_NAMES.get(canon(name), [canon(name).replace("-", "_")]))
    return mods


def provided_by_wheel(path: Path) -> set[str]:
    """Top-level modules of a wheel: top_level.txt where it has one, else the first parts of its RECORD."""
    with zipfile.ZipFile(path) as z:
        top = [n for n in z.namelist() if n.endswith(".dist-info/top_level.txt")]
        if top:
            return {m.strip() for m in z.read(top[0]).decode().split() if m.strip()}
        return {n.split("/")[0].removesuffix(".py") for n in z.namelist()
                if not n.split("/")[0].endswith((".dist-info", ".data"))}


def sources(path: Path):
    """(module path, text) of every .py file of a wheel or a directory."""
    if path.is_dir():
        for f in sorted(path.rglob("*.py")):
            yield str(f.relative_to(path)), f.read_text(errors="replace")
    else:
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if n.endswith(".py"):
                    yield n, z.read(n).decode(errors="replace")


def _catches_import_errors(node: ast.Try) -> bool:
    """A handler that catches a failed import and carries on (one that raises again, as LightLLM's
    `except Exception as e: raise ValueError(...)` around `import interegular` does, makes it no less required)."""
    for h in node.handlers:
        names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
        catches = h.type is None or any(isinstance(n, ast.Name) and n.id in (
            "ImportError", "ModuleNotFoundError", "Exception", "BaseException") for n in names)
        if catches and not any(isinstance(n, ast.Raise) for stmt in h.body for n in ast.walk(stmt)):
            return True
    return False


def imports(text: str) -> list[tuple[str, bool]]:
    """(top-level module, optional) for every absolute import in the source."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, optional: bool) -> None:
        if isinstance(node, ast.Try):
            guarded = optional or _catches_import_errors(node)
            for child in node.body:
                visit(child, guarded)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, optional)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name.split(".")[0], optional) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], optional))
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    visit(tree, False)
    return found


def missing(engine: list[Path], have: set[str]) -> dict[str, dict[str, list[str]]]:
    own: set[str] = set()
    for path in engine:
        own |= provided_by_wheel(path) if path.is_file() else {p.name for p in path.iterdir()}
    known = have | own | set(sys.stdlib_module_names)
    out: dict[str, dict[str, list[str]]] = {"required": defaultdict(list), "optional": defaultdict(list)}
    seen: dict[str, bool] = {}
    where: dict[str, list[str]] = defaultdict(list)
    for path in engine:
        for name, text in sources(path):
            for mod, optional in imports(text):
                if mod in known:
                    continue
                seen[mod] = seen.get(mod, True) and optional  # required if any import of it is unguarded
                where[mod].append(name)
    for mod, optional in sorted(seen.items()):
        out["optional" if optional else "required"][mod] = sorted(set(where[mod]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("engine", nargs="+", type=Path, help="the engine's wheel(s) or source directory")
    ap.add_argument("--have", type=Path, required=True, help="`pip freeze` of the target machine")
    ap.add_argument("--carried", type=Path, action="append", default=[], help="folder of wheels carried with it")
    args = ap.parse_args(argv)
    have = provided_by_freeze(args.have)
    for folder in args.carried:
        for wheel in folder.glob("*.whl"):
            have |= provided_by_wheel(wheel)
    result = missing(args.engine, have)
    for kind in ("required", "optional"):
        print(f"{kind} ({len(result[kind])}): imported {'outside' if kind == 'required' else 'inside'} a try "
              "that catches ImportError, and not on the target")
        for mod, files in result[kind].items():
            print(f"  {mod:24s} {files[0]}" + (f" (+{len(files) - 1} more)" if len(files) > 1 else ""))
    return 1 if result["required"] else 0


if __name__ == "__main__":
    sys.exit(main())
