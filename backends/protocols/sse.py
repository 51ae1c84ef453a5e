"""Server-sent events as LLM servers send them, read to the letter of the SSE spec
(https://html.spec.whatwg.org/multipage/server-sent-events.html) and no further.

LineReader turns the bytes of a response into lines: LF, CR and CRLF all end a line, a leading UTF-8 BOM is
dropped, and one line is bounded (MAX_LINE) so a server that never sends a newline cannot grow the client's
memory. EventParser turns lines into events: `data:` fields (several in one event are joined with "\\n"),
comments (`:`) and other fields (`event:`, `id:`, `retry:`) ignored, a blank line ends the event. Every event's
data must be one JSON object (or the `[DONE]` marker); anything else sets `error`, which fails the request.

Both run once per chunk / line on the load path. The common event is one complete JSON object on one `data:`
line, so that line is parsed the moment it arrives (and its tokens timed then); a line that is not yet a
complete object is held until the blank line that ends its event, then the joined data is parsed. A second
non-empty `data:` line after a complete object can only make the joined data invalid (two values), so it is
an error without being held.
"""

from __future__ import annotations

try:  # about 1 us per chunk instead of json's 4 on the load path, and it rejects invalid UTF-8 the same way
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency; json gives the same answers, slower
    from json import loads as _loads

MAX_LINE = 1 << 20  # bytes; the largest real event (a chunk with logprobs of many tokens) is a few KiB
_BOM = b"\xef\xbb\xbf"
_REASON_BYTES = 80  # how much of a bad event an error quotes


class LineTooLong(Exception):
    """One line of the stream grew past MAX_LINE without ending."""


class LineReader:
    """Response bytes -> complete lines (without their end), as they arrive."""

    __slots__ = ("_pending", "_parts", "_size", "_start", "_cr", "max_line")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._pending = b""  # the start of a line not yet ended
        # reads that ended no line, after _pending: kept apart and joined once, so a long line that arrives in
        # small reads costs its length in copying, not its length times the number of reads
        self._parts: list[bytes] = []
        self._size = 0
        self._start = True  # the BOM can only come first, and may arrive split over reads
        self._cr = False  # the last read ended with CR: a LF that starts the next read belongs to it (CRLF)
        self.max_line = max_line

    def feed(self, data: bytes) -> list[bytes]:
        if self._start:
            data, self._pending = self._pending + data, b""
            if len(data) < 3 and _BOM.startswith(data):
                self._pending = data
                return []
            self._start = False
            if data[:3] == _BOM:
                data = data[3:]
        if self._cr:
            self._cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\n" not in data and b"\r" not in data:
            self._parts.append(data)
            self._size += len(data)
            if self._size > self.max_line:
                raise self._too_long()
            return []
        if self._parts:
            data = self._pending + b"".join(self._parts) + data
            self._parts = []
        elif self._pending:
            data = self._pending + data
        if b"\r" in data:  # bytes.splitlines ends lines at LF, CR and CRLF (only those, unlike str's)
            lines = data.splitlines()
            self._cr = data[-1:] == b"\r"
            self._pending = b"" if data[-1:] in (b"\n", b"\r") else lines.pop()
        else:
            *lines, self._pending = data.split(b"\n")
        self._size = len(self._pending)
        if len(data) > self.max_line and (self._size > self.max_line
                                          or any(len(line) > self.max_line for line in lines)):
            raise self._too_long()
        return lines

    def _too_long(self) -> LineTooLong:
        self._pending, self._parts, self._size = b"", [], 0
        limit = self.max_line
        return LineTooLong(f"line over {limit >> 20} MiB" if limit % (1 << 20) == 0 else f"line over {limit} bytes")

    def rest(self) -> bytes:
        """The last line, when the stream ended without ending it."""
        rest, self._pending, self._parts = self._pending + b"".join(self._parts), b"", []
        return b"" if self._start and _BOM.startswith(rest) else rest


class EventParser:
    """Shared SSE handling for protocols whose events are one JSON object each; subclasses implement event()."""

    __slots__ = ("done", "usage", "response_id", "error", "finish_reason", "text", "_tokens", "_held",
                 "_complete", "events")
    done_at_eof = False

    def __init__(self, collect_text: bool = False) -> None:
        self.done = False
        self.usage: dict[str, int] | None = None
        self.response_id: str | None = None
        self.error: str | None = None  # the first thing that broke the wire format or reported an error
        self.finish_reason: str | None = None
        self.text: list[str] | None = [] if collect_text else None
        self.events = 0  # data events seen: none at all means the body was not an event stream
        self._tokens = 0  # tokens carried so far, however they were counted
        self._held: bytes | None = None  # data of the current event that is not yet a complete JSON value
        self._complete = False  # the current event already had its JSON object

    def feed(self, line: bytes) -> int:
        """One line (without its end) -> tokens it carried."""
        if line[:5] == b"data:":
            value = line[5:]
            if value[:1] == b" ":
                value = value[1:]
            if self._held is not None:
                self._held += b"\n" + value
                return 0
            if self._complete:
                if value.strip():
                    self._fail("two JSON values in one SSE event", value)
                return 0
            return self._data(value)
        if not line:  # the end of an event
            carried = 0
            if self._held is not None:
                held, self._held = self._held, None
                carried = self._data(held, final=True)
            self._complete = False
            return carried
        if line == b"data":  # a field with no colon has an empty value
            if self._held is not None:
                self._held += b"\n"
            return 0
        return 0  # a comment (":"), or event:, id:, retry: or an unknown field: ignored, as the spec says

    def end(self) -> None:
        """The stream ended: an event still held was never completed."""
        if self._held is not None and not self.done:
            held, self._held = self._held, None
            self._data(held, final=True)

    def _data(self, data: bytes, final: bool = False) -> int:
        stripped = data.strip()
        if not stripped:
            return 0
        self.events += 1
        if stripped == b"[DONE]":
            self.done = self._complete = True
            return 0
        try:
            event = _loads(stripped)
        except ValueError as exc:  # orjson's and json's decode errors, invalid UTF-8 included
            if not final:
                self.events -= 1
                self._held = data  # maybe the first of several data lines of one event
                return 0
            self._fail(f"malformed SSE data ({_short(exc)})", stripped)
            return 0
        self._complete = True
        if not isinstance(event, dict):
            self._fail("unexpected SSE data (not a JSON object)", stripped)
            return 0
        if "error" in event:
            err = event["error"]
            if self.error is None:
                self.error = (err.get("message", str(err)) if isinstance(err, dict) else str(err))[:200]
            return 0
        try:
            carried = self.event(event)
        except (AttributeError, TypeError, ValueError):
            self._fail("unexpected SSE event shape", stripped)
            return 0
        self._tokens += carried
        return carried

    def _fail(self, reason: str, data: bytes) -> None:
        if self.error is None:
            self.error = f"{reason}: {data[:_REASON_BYTES]!r}"

    def event(self, event: dict) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _text(self, piece: str | None) -> None:
        if piece is not None and not isinstance(piece, str):
            raise TypeError("text is not a string")
        if piece and self.text is not None:
            self.text.append(piece)


def _short(exc: ValueError) -> str:
    if isinstance(exc, UnicodeDecodeError) or "UTF-8" in str(exc):
        return "invalid UTF-8"
    text = str(exc).split(":")[0]
    return text[:60]
