"""`loadgen`: command-line entry point. User mistakes print one line naming the fix and exit 2.

Each command lives in its own module: run.py, sweep.py, locust.py, tools.py (reports, compare, the catalog and
the other utilities); common.py holds what run, sweep and locust share."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from loadgen.interrupts import EXIT_INTERRUPTED, INTERRUPTS
from loadgen.redaction import redact, remember_argv


class Parser(argparse.ArgumentParser):
    """No abbreviated flags: argparse would take `--api-k` for `--api-key`, so a secret could be given under a name
    that no redaction knows, and a typo could silently select another flag."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, redact(f"{self.prog}: error: {message} (see '{self.prog} --help')\n"))


def build_parser() -> Parser:
    from loadgen.cli import locust, run, sweep, tools
    from loadgen.plan.command import add_parser as add_plan_parser
    from loadgen.rundir import TOOL_VERSION

    parser = Parser(prog="loadgen", description="Load-test LLM serving: TTFT, TPOT, ITL, E2EL, throughput, goodput.")
    parser.add_argument("--version", action="version", version=f"loadgen (dissect) {TOOL_VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    run.add_run_parser(sub)
    sweep.add_sweep_parser(sub)
    tools.add_report_parsers(sub)
    locust.add_locust_parser(sub)
    add_plan_parser(sub)
    tools.add_utility_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """SIGINT, SIGTERM and SIGHUP are handled from here on, in every phase (loadgen/interrupts.py): whichever
    stopped the command, it exits 130. Nothing slow is imported before this line."""
    with INTERRUPTS.installed():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    remember_argv(sys.argv[1:] if argv is None else argv)  # every line printed or written masks these values
    try:
        from loadgen.cli.common import USER_ERRORS, error_line

        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "output_required", False) and not args.output:
            parser.exit(2, f"loadgen {args.command}: error: --output DIR is required (see 'loadgen {args.command} "
                           "--help')\n")
        INTERRUPTS.reach("preparing")  # reading the options, the scenario, the tokenizer
        try:
            code = args.func(args)
        except USER_ERRORS as exc:
            if not INTERRUPTS.requested:  # a stop that surfaced as a failure (a worker it stopped) is a stop
                print(f"loadgen: error: {error_line(exc)}", file=sys.stderr)
                return 2
            raise KeyboardInterrupt from None
    except KeyboardInterrupt:
        phase = INTERRUPTS.phase_when_stopped or INTERRUPTS.phase
        print(f"loadgen: interrupted ({INTERRUPTS.signal_name or 'SIGINT'} while {phase})", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_INTERRUPTED if INTERRUPTS.requested else code


if __name__ == "__main__":
    sys.exit(main())
