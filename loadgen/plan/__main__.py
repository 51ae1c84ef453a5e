"""`python -m loadgen.plan ...`: the plan command on its own (the same as `loadgen plan ...`)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from backends.errors import BackendError
from loadgen.errors import LoadgenError
from loadgen.plan.command import add_parser
from scenarios.catalog import CatalogError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="loadgen")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    add_parser(sub)
    args = parser.parse_args(["plan", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (LoadgenError, CatalogError, BackendError) as exc:
        print(f"loadgen plan: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loadgen plan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
