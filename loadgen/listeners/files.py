"""The run's own files: requests.jsonl as records arrive; summary.json, the CSV copies and the HTML report once the
summary is made."""

from __future__ import annotations

import sys
from pathlib import Path

from loadgen.outputs.csv_files import write_requests_csv, write_summary_csv
from loadgen.records import RecordWriter, RequestRecord
from loadgen.run_events import RunResult
from loadgen.rundir import write_json


class RecordFile:
    """requests.jsonl, each record appended and flushed the moment its request ends."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "requests.jsonl"
        self.writer: RecordWriter | None = None

    def started(self) -> None:
        self.writer = RecordWriter(self.path)

    def record(self, record: RequestRecord) -> None:
        self.writer.write(record)

    def stopped(self, outcome) -> None:
        if self.writer is not None:
            self.writer.close()


class CsvFiles:
    """--csv: requests.csv and summary.csv, for spreadsheets. Subscribe it after every listener that adds to the
    summary."""

    def finished(self, result: RunResult) -> None:
        write_requests_csv(result.run_dir / "requests.csv", result.records)
        write_summary_csv(result.run_dir / "summary.csv", result.summary)


class SummaryFile:
    """summary.json. Subscribe it after every listener that adds to the summary."""

    def finished(self, result: RunResult) -> None:
        write_json(result.run_dir / "summary.json", result.summary)


class HtmlReport:
    """--report: report.html from the finished run directory, so subscribe it last (after run.json is final).
    matplotlib was checked for before the run started."""

    def finished(self, result: RunResult) -> None:
        write_html_report(result.run_dir)


def write_html_report(directory: Path) -> None:
    """report.html for a run or a sweep directory, and where it went."""
    from loadgen.outputs.html_report import write_report

    print(f"report: {write_report(directory)}", file=sys.stderr)
