"""run.json: everything needed to reproduce and explain a run, built once per run and rewritten as its status
changes (running, then finished / interrupted / stopped_early, or failed)."""

from __future__ import annotations

from pathlib import Path

from loadgen.rundir import environment, utc_now, write_json


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [repr(error)])[0]


class RunJson:
    def __init__(self, run_dir: Path, info: dict, workload=None):
        self.path, self.workload = run_dir / "run.json", workload
        self.info = {"status": "running", "started_at": utc_now(), "environment": environment(), **info}
        write_json(self.path, self.info)

    def failed(self, error: BaseException) -> None:
        self.info.update(status="failed", finished_at=utc_now(), error=_first_line(error))
        write_json(self.path, self.info)

    def finished(self, result) -> None:
        """A listener of the run's `finished` event (result: a RunResult). The workload is described again: its
        counts (clipped prompts, reused dataset records) grow as its prompts are made."""
        outcome = result.outcome
        status = "interrupted" if outcome.interrupted else ("stopped_early" if outcome.stopped_early else "finished")
        self.ended(status, stopped_early=outcome.stopped_early, origin_perf_counter_ns=outcome.origin_ns,
                   wall_s=outcome.wall_s, workload=self.workload.describe())

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
