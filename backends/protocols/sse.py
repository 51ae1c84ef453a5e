"""Server-sent events as LLM servers send them: `data:` lines, one JSON object each, maybe a `[DONE]` marker.

Parsers for each protocol subclass EventParser and implement event(); this is called once per SSE line on
the load path, so it does the least work that answers "does this line carry tokens, and how many".
"""

from __future__ import annotations

import json


class EventParser:
    """Shared SSE handling: `data:` lines holding one JSON object each."""

    __slots__ = ("done", "usage", "response_id", "error", "finish_reason", "text", "_tokens")
    done_at_eof = False

    def __init__(self, collect_text: bool = False) -> None:
        self.done = False
        self.usage: dict[str, int] | None = None
        self.response_id: str | None = None
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.text: list[str] | None = [] if collect_text else None
        self._tokens = 0

    def data(self, line: bytes) -> bytes | None:
        """The payload of a `data:` line; None for other lines, empty data and the end marker (which sets done)."""
        if not line.startswith(b"data:"):
            return None
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return None
        return data or None

    def feed(self, line: bytes) -> int:
        data = self.data(line)
        if data is None:
            return 0
        return self.parse(data)

    def parse(self, data: bytes) -> int:
        try:
            event = json.loads(data)
        except ValueError:
            self.error = f"malformed SSE data: {data[:120]!r}"
            return 0
        if not isinstance(event, dict):
            self.error = f"unexpected SSE data: {data[:120]!r}"
            return 0
        if "error" in event:
            err = event["error"]
            self.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            return 0
        return self.event(event)

    def event(self, event: dict) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _text(self, piece: str | None) -> None:
        if piece and self.text is not None:
            self.text.append(piece)
