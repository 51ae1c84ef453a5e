"""One RequestRecord per request, appended to requests.jsonl the moment the request ends."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from loadgen.redaction import redact

# status values: "ok", "error:<kind>" (http, connection, stream, empty, ...), "timeout", "cancelled"
OK = "ok"
TIMEOUT = "timeout"
CANCELLED = "cancelled"


@dataclass
class RequestRecord:
    """Times are seconds since the run's origin (run.json: origin_perf_counter_ns), from one monotonic clock.
    token_times_ms are arrival times of token-bearing chunks, in ms after `sent_s`; chunk_tokens holds the
    token count of each such chunk only when some chunk carried more than one."""

    index: int
    phase: str  # "warmup" or "measured"
    status: str
    sent_s: float
    finished_s: float
    scheduled_s: float | None = None  # open loop only
    first_token_s: float | None = None
    target_input_tokens: int = 0
    target_output_tokens: int = 0
    input_tokens: int = 0
    input_tokens_source: str = "target"  # "usage" or "target"
    output_tokens: int = 0
    output_tokens_source: str = "chunks"  # "usage", "tokenizer" or "chunks"
    token_times_ms: list[float] = field(default_factory=list)
    chunk_tokens: list[int] | None = None
    http_status: int | None = None
    error: str | None = None
    response_id: str | None = None
    worker: int | None = None  # the client process that sent it (--workers, or a Locust worker)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> str:
        # Every field is already JSON-native: no asdict(), whose deep copy of the token times costs more
        # than the encoding on the load path.
        return json.dumps(vars(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> "RequestRecord":
        return cls(**data)


class RecordWriter:
    """Appends and flushes each record so a crash or Ctrl-C keeps every finished measurement."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[str] = open(path, "a", encoding="utf-8")
        self.count = 0

    def write(self, record: RequestRecord) -> None:
        line = record.to_json()
        if record.error:  # a server's or client's error text may quote a URL with its userinfo, or a key
            line = redact(line)
        self._file.write(line + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        self._file.close()


def read_records(path: Path) -> list[RequestRecord]:
    with open(path, encoding="utf-8") as f:
        return [RequestRecord.from_dict(json.loads(line)) for line in f if line.strip()]

