"""Workload datasets: ShareGPT-style conversations, JSONL prompts, and CSV arrival traces (Azure, BurstGPT).

Parsers never stop at the first bad record: they skip it and count why, so a user learns how much of a
file was usable. Text is never evaluated, only read.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from loadgen.errors import LoadgenError

FORMATS = ("sharegpt", "prompts", "azure", "burstgpt")
# Without a tokenizer, dataset text is counted as one token per 4 characters (the common rule of thumb for
# English with BPE vocabularies); summaries say which count was used.
CHARS_PER_TOKEN = 4
TEXT_APPROXIMATION = "approximation: one token per 4 characters of dataset text (no tokenizer given)"


def approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class Turn:
    user: str
    user_tokens: int
    assistant: str
    assistant_tokens: int


@dataclass(frozen=True)
class DatasetRecord:
    """One request (or, with several turns, one conversation). Traces have no text: lengths and a timestamp."""

    input_tokens: int
    output_tokens: int
    prompt: str | None = None
    timestamp_s: float | None = None
    turns: tuple[Turn, ...] = ()


@dataclass
class Dataset:
    path: Path
    format: str
    records: list[DatasetRecord]
    skipped: Counter = field(default_factory=Counter)
    token_count: str = TEXT_APPROXIMATION

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.format,
            "records": len(self.records),
            "skipped": dict(self.skipped),
            "token_count": self.token_count,
        }

    def filter(self, max_context: int, min_input: int = 1, max_input: int | None = None,
               max_output: int | None = None) -> "Dataset":
        """Drop records that do not fit the model or the requested length window; count why."""
        kept: list[DatasetRecord] = []
        skipped = Counter(self.skipped)
        for r in self.records:
            if r.input_tokens + r.output_tokens > max_context:
                skipped["too long for the model's context"] += 1
            elif r.input_tokens < min_input or (max_input is not None and r.input_tokens > max_input):
                skipped["input length outside the filter"] += 1
            elif max_output is not None and r.output_tokens > max_output:
                skipped["output length outside the filter"] += 1
            else:
                kept.append(r)
        return Dataset(self.path, self.format, kept, skipped, self.token_count)

    def sample(self, n: int | None, seed: int, stream: int = 0) -> list[DatasetRecord]:
        """The records in an order shuffled with the seed and stream (the first n of it when n is given).
        Traces keep their order: their timestamps are the point."""
        if self.format in ("azure", "burstgpt"):
            return list(self.records[:n])
        order = np.random.default_rng([seed, 4] if stream == 0 else [seed, 4, stream]).permutation(len(self.records))
        return [self.records[i] for i in order[:n]]


def detect_format(path: Path) -> str:
    try:
        if not path.read_bytes().strip():
            raise LoadgenError(f"dataset {path} is empty; give a file with records")
    except OSError as exc:
        raise LoadgenError(f"cannot read dataset {path}: {exc.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError) as exc:
            raise LoadgenError(f"cannot read dataset {path}: {exc}") from None
        names = {h.strip() for h in header}
        if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= names:
            return "azure"
        if {"Timestamp", "Request tokens", "Response tokens"} <= names:
            return "burstgpt"
        raise LoadgenError(
            f"{path}: unknown CSV columns {sorted(names)}; expected Azure (TIMESTAMP,ContextTokens,GeneratedTokens) "
            "or BurstGPT (Timestamp,Request tokens,Response tokens)"
        )
    for obj in _json_objects(path, Counter()):
        if "conversations" in obj or "messages" in obj:
            return "sharegpt"
        if "prompt" in obj:
            return "prompts"
        break
    raise LoadgenError(f"{path}: cannot tell the dataset format; pass --dataset-format ({', '.join(FORMATS)})")


def load_dataset(path: str | Path, fmt: str | None = None,
                 count_tokens: Callable[[str], int] | None = None) -> Dataset:
    p = Path(path)
    if not p.is_file():
        raise LoadgenError(f"dataset {p} does not exist or is not a file; check --dataset")
    fmt = fmt or detect_format(p)
    if fmt not in FORMATS:
        raise LoadgenError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")
    count = count_tokens or approx_tokens
    skipped: Counter = Counter()
    if fmt == "sharegpt":
        records = list(_sharegpt(p, count, skipped))
    elif fmt == "prompts":
        records = list(_prompts(p, count, skipped))
    else:
        records = list(_trace(p, fmt, skipped))
    if not records:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items()) or "the file is empty"
        raise LoadgenError(f"dataset {p} has no usable {fmt} records ({reasons})")
    token_count = "tokenizer" if count_tokens else TEXT_APPROXIMATION
    if fmt in ("azure", "burstgpt"):
        token_count = "trace token counts"
    return Dataset(p, fmt, records, skipped, token_count)


# -- JSON and JSONL ---------------------------------------------------------------------------------
def _json_objects(path: Path, skipped: Counter) -> Iterator[dict]:
    """Objects from a JSON array file or a JSONL file; unparsable lines are counted, not fatal."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadgenError(f"cannot read dataset {path}: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LoadgenError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); fix it or use JSONL") from None
        for item in items:
            if isinstance(item, dict):
                yield item
            else:
                skipped["not a JSON object"] += 1
        return
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            skipped["unparsable line"] += 1
            continue
        if isinstance(item, dict):
            yield item
        else:
            skipped["not a JSON object"] += 1


_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "chatgpt", "bard", "model"}


def _sharegpt(path: Path, count: Callable[[str], int], skipped: Counter) -> Iterator[DatasetRecord]:
    for obj in _json_objects(path, skipped):
        raw = obj.get("conversations")
        if raw is None:
            raw = obj.get("messages")
        if not isinstance(raw, list):
            skipped["no conversations/messages list"] += 1
            continue
        turns: list[Turn] = []
        pending_user: str | None = None
        bad = False
        for msg in raw:
            if not isinstance(msg, dict):
                bad = True
                break
            role = str(msg.get("from", msg.get("role", ""))).lower()
            text = msg.get("value", msg.get("content"))
            if role == "system":
                continue
            if not isinstance(text, str):
                bad = True
                break
            if role in _USER_ROLES:
                pending_user = text
            elif role in _ASSISTANT_ROLES and pending_user is not None:
                if pending_user.strip() and text.strip():
                    turns.append(Turn(pending_user, count(pending_user), text, count(text)))
                pending_user = None
        if bad:
            skipped["malformed message"] += 1
            continue
        if not turns:
            skipped["no non-empty user/assistant turn"] += 1
            continue
        first = turns[0]
        yield DatasetRecord(first.user_tokens, first.assistant_tokens, first.user, turns=tuple(turns))


def _prompts(path: Path, count: Callable[[str], int], skipped: Counter) -> Iterator[DatasetRecord]:
    for obj in _json_objects(path, skipped):
        prompt, out = obj.get("prompt"), obj.get("output_len", obj.get("max_tokens"))
        if not isinstance(prompt, str) or not prompt.strip():
            skipped["empty or missing prompt"] += 1
            continue
        if not isinstance(out, int) or isinstance(out, bool) or out < 1:
            skipped["missing or non-positive output_len"] += 1
            continue
        yield DatasetRecord(count(prompt), out, prompt)


# -- CSV traces -------------------------------------------------------------------------------------
_TRACE_COLUMNS = {
    "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "burstgpt": ("Timestamp", "Request tokens", "Response tokens"),
}


def _parse_time(value: str) -> float:
    """Seconds: a plain number, or an Azure-style datetime (fractional seconds beyond microseconds dropped)."""
    try:
        return float(value)
    except ValueError:
        pass
    text = value.strip().replace("T", " ")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text).timestamp()


def _check_time(path: Path, line: int, text: str, t: float) -> None:
    """A replay sends at these times: one that is not finite would wait forever, and a negative one is a broken
    file, so each is refused with its line. Rows out of order are sorted (each keeps its own lengths)."""
    if not math.isfinite(t):
        raise LoadgenError(f"{path}:{line}: timestamp {text!r} is not a finite time; fix or drop that row")
    if t < 0:
        raise LoadgenError(f"{path}:{line}: timestamp {text!r} is negative; trace times count up from 0 or a date")


def _trace(path: Path, fmt: str, skipped: Counter) -> Iterator[DatasetRecord]:
    t_col, in_col, out_col = _TRACE_COLUMNS[fmt]
    rows: list[tuple[float, int, int]] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, skipinitialspace=True)
            for row in reader:
                try:
                    t = _parse_time(row[t_col])
                    n_in, n_out = int(float(row[in_col])), int(float(row[out_col]))
                except (KeyError, TypeError, ValueError):
                    skipped["unparsable row"] += 1
                    continue
                if n_in < 1 or n_out < 1:
                    skipped["zero-token request or response"] += 1
                    continue
                _check_time(path, reader.line_num, row[t_col], t)
                rows.append((t, n_in, n_out))
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadgenError(f"cannot read dataset {path}: {exc}") from None
    rows.sort(key=lambda r: r[0])
    if rows:
        t0 = rows[0][0]
        for t, n_in, n_out in rows:
            yield DatasetRecord(n_in, n_out, None, timestamp_s=t - t0)


def trace_offsets(records: Iterable[DatasetRecord], time_scale: float) -> np.ndarray:
    """Send times from a trace: timestamps relative to the first, multiplied by time_scale
    (0.5 replays twice as fast, 2 half as fast)."""
    return np.array([(r.timestamp_s or 0.0) * time_scale for r in records])
