"""Compare runs: aligned metrics with relative differences against the first side, only for like workloads, and
for each per-request latency statistic a bootstrap interval of that difference and whether it is more than noise.

A side is one run or several runs of one configuration (repeats); with repeats, runs are resampled too
(loadgen/stats.py says why)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from loadgen import stats
from loadgen.errors import LoadgenError
from loadgen.metrics import e2el_ms, itl_ms, tpot_ms, ttft_ms
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


def check_comparable(runs: list[RunData], force: bool, ignore: tuple[str, ...] = ()) -> list[str]:
    """Differences between the runs' workloads and loads (keys in `ignore` aside); raises unless force."""
    base = signature(runs[0].run)
    diffs = []
    for r in runs[1:]:
        other = signature(r.run)
        for section in base:
            a, b = base[section], other[section]
            if isinstance(a, dict):
                for key in sorted(set(a) | set(b)):
                    if key not in ignore and a.get(key) != b.get(key):
                        diffs.append(f"{r.name}: {section}.{key} is {b.get(key)!r}, {runs[0].name} has {a.get(key)!r}")
            elif a != b:
                diffs.append(f"{r.name}: {section} is {b!r}, {runs[0].name} has {a!r}")
    if diffs and not force:
        raise LoadgenError(f"the runs' workloads differ ({diffs[0]}{'; ...' if len(diffs) > 1 else ''}); "
                           "compare like with like, or pass --force")
    return diffs


@dataclass
class Side:
    """One configuration: a run, or several runs of it (repeats)."""

    runs: list[RunData]

    @property
    def name(self) -> str:
        return self.runs[0].name if len(self.runs) == 1 else f"{self.runs[0].name} ({len(self.runs)} runs)"

    @property
    def simulated(self) -> bool:
        return any(r.simulated for r in self.runs)


def as_sides(items: Sequence[RunData | Side]) -> list[Side]:
    return [x if isinstance(x, Side) else Side([x]) for x in items]


def check_sides(sides: Sequence[Side], force: bool) -> list[str]:
    """Like workloads across sides (their first runs) and within each side; repeats within a side may differ in
    their prompt seed (fresh prompts per repeat are the point of repeating)."""
    diffs = check_comparable([s.runs[0] for s in sides], force)
    for side in sides:
        if len(side.runs) > 1:
            diffs += check_comparable(side.runs, force, ignore=("seed",))
    return diffs


# The statistics that are tested: per-request values (a request's ITL gaps are resampled together), as
# loadgen.metrics defines them, over the measured requests that completed.
PerRequest = Callable[[RequestRecord], list[float]]
TESTED: dict[str, tuple[PerRequest, tuple[str, ...]]] = {
    "TTFT": (lambda r: [] if (v := ttft_ms(r)) is None else [v], ("p50", "p99")),
    "TPOT": (lambda r: [] if (v := tpot_ms(r)) is None else [v], ("p50", "p99")),
    "ITL": (itl_ms, ("p50", "p99")),
    "E2EL": (lambda r: [e2el_ms(r)], ("p50", "p99")),
}
LOWER_IS_BETTER = ("faster", "slower")
WITHIN_NOISE = "within noise"
NOT_TESTED = "not tested"


def method_text(resamples: int = stats.RESAMPLES, level: float = stats.LEVEL) -> str:
    return (f"{level:.0%} bootstrap interval of the relative difference against the first side, {resamples:,} "
            "resamples over requests (and over runs, for a side of several runs); a difference is significant "
            f"when its interval excludes 0; a percentile is tested with at least {stats.MIN_BEYOND} values beyond "
            "it in every run (p99: 1,000). Throughput, goodput and counts are not tested (they are not averages of "
            "independent requests).")


SINGLE_RUN_NOTE = ("one run on a side: its interval covers sampling noise within the run, not run-to-run variation "
                   "(7.5% in median TTFT between two identical runs on an H100); repeat the runs and give each side's "
                   "runs with --group to include it")


def _run_values(records: list[RequestRecord], per_request: PerRequest) -> stats.RequestValues | None:
    groups = [g for r in records if (g := per_request(r))]
    return stats.RequestValues.from_requests(groups) if groups else None


def tested_differences(sides: Sequence[Side], resamples: int = stats.RESAMPLES,
                     seed: int = stats.SEED) -> dict[tuple[str, str], list[stats.Difference | str | None]]:
    """(metric, statistic) -> per side: the Difference against the first side, or why it was not tested (None
    for the first side). Seeded per metric, so a comparison prints the same intervals every time."""
    missing = [r for s in sides for r in s.runs if not (r.path / "requests.jsonl").is_file()]
    out: dict[tuple[str, str], list[stats.Difference | str | None]] = {}
    records = [] if missing else [[[x for x in r.records() if x.phase == "measured" and x.ok] for r in s.runs]
                                  for s in sides]
    for m, (metric, (per_request, stat_names)) in enumerate(TESTED.items()):
        cells: dict[str, list] = {st: [None] for st in stat_names}
        values = None if missing else [[_run_values(recs, per_request) for recs in side] for side in records]
        for i in range(1, len(sides)):
            if values is None:
                why = f"{NOT_TESTED} (no requests.jsonl in {missing[0].name})"
            elif any(v is None for v in values[0] + values[i]):
                why = f"{NOT_TESTED} (a run has no {metric} values)"
            else:
                why = None
            if why:
                for st in stat_names:
                    cells[st].append(why)
                continue
            few = min(v.values.size for v in values[0] + values[i])  # the smallest run decides
            testable = [st for st in stat_names if few >= stats.min_values(st)]
            found = stats.differences(values[0], values[i], testable, resamples=resamples,
                                      seed=[seed, m, i]) if testable else {}
            for st in stat_names:
                cells[st].append(found.get(st) or f"{NOT_TESTED} ({few:,} values, needs "
                                                  f"{stats.min_values(st):,})")
        for st in stat_names:
            out[(metric, st)] = cells[st]
    return out


def verdict(d: stats.Difference, words: tuple[str, str] = LOWER_IS_BETTER) -> str:
    if not d.significant:
        return WITHIN_NOISE
    return words[0] if d.diff.high < 0 else words[1]


def _interval_json(d: stats.Difference) -> dict:
    return {"diff_low": d.diff.low, "diff_high": d.diff.high,
            "relative_low": d.ratio.low if d.ratio else None, "relative_high": d.ratio.high if d.ratio else None,
            "runs": list(d.runs)}


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


def _side_value(summaries: list[dict], path: tuple[str, str]) -> float | None:
    """One run's value; for repeats the mean of the runs' values (what the intervals are about)."""
    values = [_get(s, path) for s in summaries]
    return None if any(v is None for v in values) else sum(values) / len(values)


def _side_cell(summaries: list[dict], cell: Callable[[dict], str]) -> str:
    texts = [cell(s) for s in summaries]
    if len(set(texts)) == 1:
        return texts[0]
    return ", ".join(f"{t} x{texts.count(t)}" for t in dict.fromkeys(texts))


def comparison_rows(items: Sequence[RunData | Side], test: bool = True) -> list[dict]:
    """Numeric rows with relative differences against the first side and, for the tested latency statistics, the
    interval of that difference and a verdict (`faster`, `slower`, `within noise`; `not tested` for the rest);
    then the verdicts a sweep would give each side (the same criterion as `loadgen sweep`: the SLO fraction, and
    the server keeping up with the offered load)."""
    sides = as_sides(items)
    summaries = [[r.with_pace() for r in s.runs] for s in sides]
    tested = tested_differences(sides) if test and len(sides) > 1 else {}
    rows = []
    for label, path in COMPARED:
        values = [_side_value(s, path) for s in summaries]
        row = {"metric": label, "values": values, "relative": [relative(v, values[0]) for v in values],
               "interval": [None] * len(sides), "verdict": [None] + [NOT_TESTED] * (len(sides) - 1)}
        key = (label.split()[0], label.split()[1]) if label.endswith("(ms)") else None
        for i, d in enumerate(tested.get(key, [])):
            if isinstance(d, stats.Difference):
                row["interval"][i], row["verdict"][i] = _interval_json(d), verdict(d)
            elif d is not None:
                row["verdict"][i] = d
        rows.append(row)
    for label, cell in ((f"kept up (within {RATE_TOLERANCE:.0%})", _kept_up_cell),
                        (f"meets SLO ({SLO_FRACTION:.0%} and kept up)", _meets_cell)):
        rows.append({"metric": label, "values": [_side_cell(s, cell) for s in summaries],
                     "relative": [None] * len(sides), "interval": [None] * len(sides),
                     "verdict": [None] * len(sides)})
    return rows


def summary_lines(items: Sequence[RunData | Side], rows: list[dict]) -> list[str]:
    """One line per side against the first: what is significantly different, and no winner when nothing is."""
    sides = as_sides(items)
    lines = []
    for i in range(1, len(sides)):
        found = {"faster": [], "slower": []}
        noise = 0
        for row in rows:
            v = row.get("verdict", [None] * len(sides))[i]
            if v in found:
                found[v].append(f"{row['metric'].removesuffix(' (ms)')} {row['relative'][i]:+.1%}")
            noise += v == WITHIN_NOISE
        head = f"{sides[i].name} vs {sides[0].name}:"
        if not found["faster"] and not found["slower"]:
            tested = noise
            lines.append(f"{head} no winner: every tested difference is within noise ({tested} tested)" if tested
                         else f"{head} nothing could be tested")
            continue
        parts = [f"{word} on {', '.join(found[word])}" for word in ("faster", "slower") if found[word]]
        mixed = "mixed, no overall winner: " if found["faster"] and found["slower"] else ""
        line = f"{head} {mixed}{'; '.join(parts)}" + (f"; within noise on {noise} more" if noise else "")
        if len(found["faster"]) + len(found["slower"]) == 1 and noise:
            # each interval is 95%: among several tested statistics one in 20 is expected to differ by chance
            line += f" (1 of {noise + 1} tested: at 95% each, one in 20 differs by chance alone)"
        lines.append(line)
    return lines


def method_notes(items: Sequence[RunData | Side]) -> list[str]:
    sides = as_sides(items)
    notes = [method_text()]
    if any(len(s.runs) == 1 for s in sides):
        notes.append(SINGLE_RUN_NOTE)
    return notes


def format_headers(items: Sequence[RunData | Side]) -> list[str]:
    sides = as_sides(items)
    out = ["metric", sides[0].name + (" (SIMULATED)" if sides[0].simulated else "")]
    for s in sides[1:]:
        out += [s.name + (" (SIMULATED)" if s.simulated else ""), f"{stats.LEVEL:.0%} interval", "verdict"]
    return out


def _interval_cell(interval: dict | None) -> str:
    if interval is None:
        return ""
    if interval["relative_low"] is not None:
        return f"{interval['relative_low']:+.1%} .. {interval['relative_high']:+.1%}"
    return f"{interval['diff_low']:+.2f} .. {interval['diff_high']:+.2f} ms"


def format_rows(items: Sequence[RunData | Side], rows: list[dict]) -> list[list[str]]:
    """Cells under format_headers: each side's value (with its relative difference), then for every side after
    the first the interval of that difference and its verdict."""
    out = []
    for row in rows:
        cells = [row["metric"]]
        n = len(row["values"])
        intervals = row.get("interval", [None] * n)
        verdicts = row.get("verdict", [None] * n)
        for i, (v, rel) in enumerate(zip(row["values"], row["relative"])):
            text = "-" if v is None else v if isinstance(v, str) else f"{v:,.2f}"
            if i and rel is not None:
                text += f" ({rel:+.1%})"
            cells.append(text)
            if i:
                cells += [_interval_cell(intervals[i]), verdicts[i] or ""]
        out.append(cells)
    return out
