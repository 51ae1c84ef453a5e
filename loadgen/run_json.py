"""run.json: everything needed to reproduce and explain a run, built once per run and rewritten as its status
changes (running, then finished / interrupted / stopped_early, or failed)."""

from __future__ import annotations

import re
from pathlib import Path

from backends.process import log_tail
from loadgen.rundir import environment, utc_now, write_json

SERVER_LOG_QUOTE_LIMIT = 300
SERVER_LOG_SCAN_LINES = 2000  # a stalled engine's last words are near the end; a long run's log can be large
_LEVEL = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b")  # a logging level: vLLM, SGLang, LightLLM, TGI all print one
_EXCEPTION = re.compile(r"\b\w*(Error|Exception)\b:")  # a traceback's last line, for logs without levels
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [repr(error)])[0]


def every_request_failed(summary: dict) -> str | None:
    """Why a run measured nothing although requests were sent (every one an error or a timeout), or None. Such a
    run is not a result: run.json says failed and the command exits non-zero, rather than 100% 404s with exit 0."""
    counts = summary.get("requests") or {}
    failed = (counts.get("failed") or 0) + (counts.get("timed_out") or 0)
    if counts.get("completed") or not failed:
        return None
    kinds = ", ".join(f"{n} {kind}" for kind, n in (counts.get("errors_by_kind") or {}).items())
    return f"every request failed ({failed} of {counts.get('total', failed)}{': ' + kinds if kinds else ''})"


def server_log_error(path: Path) -> str | None:
    """The last error line of a launched server's log, trimmed, or None: the one line that says why a server
    stopped answering (on an H200, LightLLM's `Batch decode encountered an unexpected ERROR: CUDA out of
    memory`), quoted when a run against it stops early or fails. A line with an error level is preferred to a
    traceback's last line."""
    lines = [_ANSI.sub("", line).strip() for line in log_tail(path, SERVER_LOG_SCAN_LINES).splitlines()]
    for pattern in (_LEVEL, _EXCEPTION):
        found = next((line for line in reversed(lines) if pattern.search(line)), None)
        if found:
            text = " ".join(found.split())
            return text[:SERVER_LOG_QUOTE_LIMIT] + ("..." if len(text) > SERVER_LOG_QUOTE_LIMIT else "")
    return None


class RunJson:
    def __init__(self, run_dir: Path, info: dict, workload=None):
        self.path, self.workload = run_dir / "run.json", workload
        self.info = {"status": "running", "started_at": utc_now(), "environment": environment(), **info}
        write_json(self.path, self.info)

    def failed(self, error: BaseException, **fields) -> None:
        self.info.update(status="failed", finished_at=utc_now(), error=_first_line(error), **fields)
        write_json(self.path, self.info)

    def finished(self, result) -> None:
        """A listener of the run's `finished` event (result: a RunResult). The workload is described again: its
        counts (clipped prompts, reused dataset records) grow as its prompts are made."""
        outcome = result.outcome
        status = "interrupted" if outcome.interrupted else ("stopped_early" if outcome.stopped_early else "finished")
        # a run that ran its course and measured nothing failed; an interrupted or stopped one says that instead
        failure = every_request_failed(result.summary) if status == "finished" else None
        extra = {"error": failure} if failure else {}
        if result.summary.get("server_log_error"):
            extra["server_log_error"] = result.summary["server_log_error"]
        self.ended("failed" if failure else status, stopped_early=outcome.stopped_early, stalled=outcome.stalled,
                   origin_perf_counter_ns=outcome.origin_ns, wall_s=outcome.wall_s,
                   workload=self.workload.describe(), **extra)

    def ended(self, status: str, **fields) -> None:
        """The run's final status and what is only known at its end (a Locust run's too)."""
        self.info.update(status=status, finished_at=utc_now(), **fields)
        write_json(self.path, self.info)


def record_failed_start(run_dir: Path, scenario: str | None, error: BaseException) -> None:
    """A run that failed before its first request still leaves a run.json saying what and why."""
    if (run_dir / "run.json").exists():
        return
    write_json(run_dir / "run.json", {
        "status": "failed",
        "finished_at": utc_now(),
        "error": _first_line(error),
        "environment": environment(),
        "scenario": scenario,
        "server_log": str(run_dir / "server.log") if (run_dir / "server.log").exists() else None,
    })
