"""The import layers hold: scenarios <- backends <- loadgen, and scenarios <- training_bench (docs/architecture.md).

Every import in the four packages is read with `ast` -- module level, inside functions, relative, and
`importlib.import_module("...")` with a literal name -- so a lazy import that would tie the layers together is
caught as well as a top-level one. The checker is tested on synthetic sources first, so a green run means the tree
is clean and not that the checker sees nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from backends.registry import FRAMEWORKS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scenarios", "backends", "loadgen", "training_bench")
# What each package may import of the others (itself always).
MAY_IMPORT = {
    "scenarios": set(),
    "backends": {"scenarios"},
    "loadgen": {"backends", "scenarios"},
    "training_bench": {"scenarios"},
}
# The modules of backends that speak for a real framework (every adapter registered), and the registry that gathers
# them. The simulated engine stands in for any of them, so it imports none.
ADAPTER_MODULES = (*sorted({launch.__module__ for launch in FRAMEWORKS.values()}), "backends.registry")
# The virtual-time replay is the engine without HTTP: the live engine's thread, its server and its command stay out.
REPLAY_MUST_NOT = ("backends.sim.server", "backends.sim.engine", "backends.sim.command", "aiohttp")
REPLAY_MODULES = ("backends.sim.replay", "backends.sim.replay_common", "backends.sim.span_replay",
                  "backends.sim.step_totals")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in `source`, the module `module` (a package's __init__ when
    `is_package`). `from a import b` yields a.b, which is a module or a name in a: either way it lies under a."""
    tree = ast.parse(source)
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                stem = ".".join([*base, *([node.module] if node.module else [])])
            else:
                stem = node.module or ""
            found += [(node.lineno, f"{stem}.{alias.name}" if alias.name != "*" else stem) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(module: str, imported: list[tuple[int, str]]) -> list[str]:
    """What `module` imports against the layers, one line each."""
    top = module.split(".")[0]
    bad = []
    for line, name in imported:
        target = name.split(".")[0]
        where = f"{module}:{line} imports {name}"
        if target in PACKAGES and target != top and target not in MAY_IMPORT[top]:
            bad.append(f"{where}: {top} may import only {sorted(MAY_IMPORT[top]) or 'nothing'} of the packages")
        if _under(module, "backends.sim") and any(_under(name, m) for m in ADAPTER_MODULES):
            bad.append(f"{where}: the simulated engine imports no framework adapter")
        if any(_under(module, m) for m in REPLAY_MODULES) and any(_under(name, m) for m in REPLAY_MUST_NOT):
            bad.append(f"{where}: the replay runs without HTTP or the live engine")
    return bad


def tree_violations(root: Path) -> list[str]:
    bad = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            bad += violations(module, imports_of(path.read_text(), module, path.name == "__init__.py"))
    return bad


# -- the checker itself ---------------------------------------------------------------------------------------

def test_a_lazy_import_of_loadgen_from_backends_is_caught():
    source = "import json\n\ndef f():\n    from loadgen.metrics import summarize\n    return summarize\n"
    found = imports_of(source, "backends.process")
    assert (4, "loadgen.metrics.summarize") in found
    assert violations("backends.process", found) == [
        "backends.process:4 imports loadgen.metrics.summarize: backends may import only ['scenarios'] of the packages"]


# One violation per rule: (the importing module, its source, what the complaint says).
VIOLATIONS = {
    "scenarios imports backends": ("scenarios.catalog", "import backends.errors\n", "scenarios may import only nothing"),
    "training_bench imports the sim": ("training_bench.train", "from backends.sim import roofline\n",
                                       "training_bench may import only ['scenarios']"),
    "importlib with a literal": ("training_bench.ops", "import importlib\nm = importlib.import_module('loadgen.cli')\n",
                                 "training_bench may"),
    "the sim imports an adapter, relatively": ("backends.sim.engine", "from ..vllm import launch\n",
                                               "imports backends.vllm.launch: the simulated engine"),
    "the sim imports the registry": ("backends.sim.config", "from backends.registry import adapter\n",
                                     "the simulated engine imports no"),
    "the replay imports the server": ("backends.sim.replay", "from .server import SimServer\n",
                                      "the replay runs without HTTP"),
}


@pytest.mark.parametrize("rule", VIOLATIONS)
def test_each_rule_catches_its_violation(rule):
    module, source, expected = VIOLATIONS[rule]
    found = violations(module, imports_of(source, module))
    assert len(found) == 1 and expected in found[0], found


def test_allowed_imports_pass():
    for module, source in [("loadgen.client", "from backends.protocols.openai import OpenAIProtocol\n"),
                           ("backends.sim.server", "from .config import SimConfig\nfrom aiohttp import web\n"),
                           ("backends.sim.replay", "from backends.sim.pipeline import FrontEnd\n"),
                           ("training_bench.cli", "from scenarios.catalog import get_model\n")]:
        assert violations(module, imports_of(source, module)) == []


def test_relative_imports_resolve_inside_a_package():
    assert imports_of("from . import pipeline\n", "backends.sim", is_package=True) == [(1, "backends.sim.pipeline")]
    assert imports_of("from .. import errors\n", "backends.sim.server") == [(1, "backends.errors")]


def test_the_checker_reads_files_under_a_tree(tmp_path):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "x.py").write_text("def f():\n    import loadgen\n")
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    assert tree_violations(tmp_path) == ["scenarios.x:2 imports loadgen: scenarios may import only nothing of the "
                                         "packages"]


# -- the tree -------------------------------------------------------------------------------------------------

def test_the_adapter_rule_covers_every_framework():
    assert {"backends.vllm", "backends.tgi", "backends.trtllm", "backends.lightllm", "backends.sglang"} <= set(
        ADAPTER_MODULES)


def test_the_tree_keeps_its_layers():
    assert tree_violations(ROOT) == []
