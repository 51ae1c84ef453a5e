"""Compare runs: aligned metrics with relative differences against the first run, only for like workloads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from loadgen.errors import LoadgenError
from loadgen.pace import RATE_TOLERANCE, judge, kept_up, pace
from loadgen.records import RequestRecord, read_records

# (label, path into summary.json); lower is better for latencies, higher for throughput
COMPARED = (
    ("TTFT p50 (ms)", ("ttft_ms", "p50")), ("TTFT p99 (ms)", ("ttft_ms", "p99")),
    ("TPOT p50 (ms)", ("tpot_ms", "p50")), ("TPOT p99 (ms)", ("tpot_ms", "p99")),
    ("ITL p50 (ms)", ("itl_ms", "p50")), ("ITL p99 (ms)", ("itl_ms", "p99")),
    ("E2EL p50 (ms)", ("e2el_ms", "p50")), ("E2EL p99 (ms)", ("e2el_ms", "p99")),
    ("requests/s", ("throughput", "requests_per_s")), ("output tok/s", ("throughput", "output_tokens_per_s")),
    ("total tok/s", ("throughput", "total_tokens_per_s")), ("goodput fraction", ("goodput", "fraction")),
    ("completed", ("requests", "completed")), ("failed", ("requests", "failed")),
    ("offered req/s (while arriving)", ("pace", "offered_per_s")),
    ("completed req/s (while arriving)", ("pace", "achieved_per_s")),
)
SLO_FRACTION = 0.9  # sweep's --slo-fraction default: the share of requests that must meet the SLO
WORKLOAD_KEYS = ("source", "input_len", "output_len", "path", "format", "multi_turn", "prefix_groups", "prefix_len",
                 "turns", "seed", "prompt_source")
LOAD_KEYS = ("mode", "arrival", "qps", "burstiness", "concurrency", "num_requests", "duration_s", "warmup", "time_scale")


@dataclass
class RunData:
    path: Path
    run: dict
    summary: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def simulated(self) -> bool:
        return bool(self.summary.get("simulated"))

    def records(self) -> list[RequestRecord]:
        return read_records(self.path / "requests.jsonl")

    def with_pace(self) -> dict:
        """The summary, with "pace" computed from requests.jsonl for a run written before it was recorded."""
        if "pace" in self.summary or not (self.path / "requests.jsonl").is_file():
            return self.summary
        return {**self.summary, "pace": pace(self.records())}


def load_run(path: str | Path) -> RunData:
    p = Path(path)
    try:
        run = json.loads((p / "run.json").read_text())
        summary = json.loads((p / "summary.json").read_text())
    except FileNotFoundError:
        raise LoadgenError(f"{p} is not a finished run directory (no run.json/summary.json); give one that "
                           "`loadgen run` wrote") from None
    except json.JSONDecodeError as exc:
        raise LoadgenError(f"{p}: unreadable run files ({exc.msg})") from None
    return RunData(p, run, summary)


def signature(run: dict) -> dict:
    workload = run.get("workload") or {}
    load = run.get("load") or {}
    return {"workload": {k: workload.get(k) for k in WORKLOAD_KEYS if k in workload},
            "load": {k: load.get(k) for k in LOAD_KEYS}, "endpoint": run.get("endpoint")}


def check_comparable(runs: list[RunData], force: bool) -> list[str]:
    """Differences between the runs' workloads and loads; raises unless force."""
    base = signature(runs[0].run)
    diffs = []
    for r in runs[1:]:
        other = signature(r.run)
        for section in base:
            a, b = base[section], other[section]
            if isinstance(a, dict):
                for key in sorted(set(a) | set(b)):
                    if a.get(key) != b.get(key):
                        diffs.append(f"{r.name}: {section}.{key} is {b.get(key)!r}, {runs[0].name} has {a.get(key)!r}")
            elif a != b:
                diffs.append(f"{r.name}: {section} is {b!r}, {runs[0].name} has {a!r}")
    if diffs and not force:
        raise LoadgenError(f"the runs' workloads differ ({diffs[0]}{'; ...' if len(diffs) > 1 else ''}); "
                           "compare like with like, or pass --force")
    return diffs


def _get(summary: dict, path: tuple[str, str]) -> float | None:
    section = summary.get(path[0]) or {}
    value = section.get(path[1])
    return float(value) if isinstance(value, (int, float)) else None


def relative(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return (value - base) / base


def _kept_up_cell(summary: dict) -> str:
    ok, why = kept_up(summary.get("pace"))
    if ok is None:
        return "too short" if why else "-"
    return "yes" if ok else "no (fell behind)"


def _meets_cell(summary: dict) -> str:
    if summary.get("goodput") is None:
        return "-"
    return "yes" if judge(summary, SLO_FRACTION).meets else "no"


def comparison_rows(runs: list[RunData]) -> list[dict]:
    """Numeric rows with relative differences, then the verdicts a sweep would give each run (the same
    criterion as `loadgen sweep`: the SLO fraction, and the server keeping up with the offered load)."""
    summaries = [r.with_pace() for r in runs]
    rows = []
    for label, path in COMPARED:
        values = [_get(s, path) for s in summaries]
        rows.append({"metric": label, "values": values, "relative": [relative(v, values[0]) for v in values]})
    for label, cell in ((f"kept up (within {RATE_TOLERANCE:.0%})", _kept_up_cell),
                        (f"meets SLO ({SLO_FRACTION:.0%} and kept up)", _meets_cell)):
        rows.append({"metric": label, "values": [cell(s) for s in summaries], "relative": [None] * len(runs)})
    return rows


def format_rows(runs: list[RunData], rows: list[dict]) -> list[list[str]]:
    out = []
    for row in rows:
        cells = [row["metric"]]
        for i, (v, rel) in enumerate(zip(row["values"], row["relative"])):
            text = "-" if v is None else v if isinstance(v, str) else f"{v:,.2f}"
            if i and rel is not None:
                text += f" ({rel:+.1%})"
            cells.append(text)
        out.append(cells)
    return out
