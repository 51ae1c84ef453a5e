"""A wheel holds every module: pyproject.toml finds packages (folders with an __init__.py) under the four
top-level ones, so a folder of modules without one would be left out of an installed (non-editable) copy while an
editable install still ran it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scenarios", "backends", "loadgen", "training_bench")


def test_every_folder_of_modules_is_a_package():
    folders = [d for package in PACKAGES for d in [ROOT / package, *(ROOT / package).rglob("*")] if d.is_dir()]
    missing = sorted(str(d.relative_to(ROOT)) for d in folders
                     if d.name != "__pycache__" and any(d.glob("*.py")) and not (d / "__init__.py").exists())
    assert missing == [], f"add an __init__.py to {missing}, or the wheel leaves them out"


def test_pyproject_finds_the_four_packages_and_their_sub_packages():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["namespaces"] is False
    for package in PACKAGES:
        assert package in find["include"] and f"{package}.*" in find["include"]
