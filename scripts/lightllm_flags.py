"""Print LightLLM's server flags as JSON, read from a source tree's `lightllm/server/api_cli.py` (it imports only
argparse, so no LightLLM dependency is needed): the fixture tests/fixtures/lightllm/api_cli_flags.json that the
adapter's argv is checked against.

    git --git-dir=MIRROR archive COMMIT | tar -x -C /tmp/lightllm-src
    python scripts/lightllm_flags.py /tmp/lightllm-src COMMIT > tests/fixtures/lightllm/api_cli_flags.json
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path


def flags(source: Path) -> dict[str, dict]:
    spec = importlib.util.spec_from_file_location("lightllm_api_cli", source / "lightllm" / "server" / "api_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: dict[str, dict] = {}
    for action in module.make_argument_parser()._actions:
        default = action.default if isinstance(action.default, (int, float, str, bool, type(None))) else str(action.default)
        for option in action.option_strings:
            if option.startswith("--"):
                found[option] = {"takes_value": action.nargs != 0, "default": default}
    return found


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/lightllm_flags.py LIGHTLLM_SOURCE_TREE COMMIT")
    source, commit = Path(sys.argv[1]), sys.argv[2]
    print(json.dumps({"source": "ModelTC/lightllm lightllm/server/api_cli.py make_argument_parser()",
                      "commit": commit, "flags": flags(source)}, indent=1))


if __name__ == "__main__":
    main()
