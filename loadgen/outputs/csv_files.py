"""CSV for spreadsheets: one row per request, and the summary flattened to key,value rows."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable

from loadgen.metrics import e2el_ms, tpot_ms, ttft_ms
from loadgen.records import RequestRecord

REQUEST_COLUMNS = ("index", "phase", "status", "http_status", "scheduled_s", "sent_s", "first_token_s", "finished_s",
                   "ttft_ms", "tpot_ms", "e2el_ms", "input_tokens", "output_tokens", "target_input_tokens",
                   "target_output_tokens", "chunks", "error")


def write_requests_csv(path: Path, records: Iterable[RequestRecord]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(REQUEST_COLUMNS)
        for r in records:
            derived = {"ttft_ms": ttft_ms(r), "tpot_ms": tpot_ms(r) if r.ok else None,
                       "e2el_ms": e2el_ms(r), "chunks": len(r.token_times_ms)}
            w.writerow([derived[c] if c in derived else getattr(r, c) for c in REQUEST_COLUMNS])


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        out: list[tuple[str, Any]] = []
        for k, v in data.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(data, list):
        return [(prefix, "; ".join(map(str, data)))]
    return [(prefix, data)]


def write_summary_csv(path: Path, summary: dict) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("key", "value"))
        w.writerows(flatten(summary))
