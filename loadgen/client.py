"""Send one request and time it: the only place a request leaves the load generator.

Stamps come from time.perf_counter_ns(): sent just before the request is written, each token-bearing
chunk as its line is read, finished when the stream ends. Per-chunk work is one parser call.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import aiohttp
from yarl import URL

from backends.protocols.native import LightLLMProtocol, TGIProtocol, TritonProtocol
from backends.protocols.openai import OpenAIProtocol
from backends.protocols.sse import LineReader, LineTooLong
from loadgen.records import CANCELLED, OK, TIMEOUT, RequestRecord
from loadgen.workload.specs import RequestSpec

ERROR_TEXT_LIMIT = 500
BODY_QUOTE_LIMIT = 200  # of a 200 response that is not an event stream: the server's message, not its page


class StreamActivity:
    """What the run's stall watchdog (loadgen/load/stop.py) reads, kept by `send_request`: how many requests are
    in flight, and when the last byte of a stream's body arrived on any of them (perf_counter_ns). Response
    headers do not count: a server whose engine died can still answer them from its HTTP front. Per chunk it costs
    one attribute store, the hot path's only addition; an attribute, not a method, for that reason."""

    __slots__ = ("in_flight", "last_byte_ns", "busy_since_ns")

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_byte_ns = 0
        self.busy_since_ns = 0  # when in_flight last went from 0 to 1: silence counts from there, not from before

    def begin(self) -> None:
        if not self.in_flight:
            self.busy_since_ns = time.perf_counter_ns()
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight -= 1

    def quiet_since_ns(self) -> int:
        """Since when no byte arrived while requests were in flight; a new request on a silent server does not
        reset it (an open loop keeps sending into a stalled server)."""
        return max(self.last_byte_ns, self.busy_since_ns)


@dataclass(frozen=True)
class Target:
    base_url: str
    model: str
    protocol: "OpenAIProtocol | TGIProtocol | LightLLMProtocol | TritonProtocol"
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may hold the API key: never serialised
    # Counts output tokens from the streamed text when the server reports no usage (--tokenizer given).
    count_tokens: Callable[[str], int] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.protocol.path_for(self.model)

    @cached_property
    def parsed_url(self) -> URL:
        return URL(self.url)

    @cached_property
    def request_headers(self) -> dict[str, str]:
        return {**self.headers, "Content-Type": "application/json"}


async def _stamp_body_sent(session, trace_ctx, params) -> None:
    trace_ctx.trace_request_ctx[0] = time.perf_counter_ns()


# Idle keep-alive connections are dropped by the client after this long: below uvicorn's 5 s default (vLLM,
# SGLang, LightLLM serve through uvicorn), so a request is never written into a connection the server is closing
# at that moment (seen in CI: ECONNRESET on a request vLLM never received, after a 5 s lull at 4 req/s).
KEEPALIVE_S = 4.0


def make_session(connection_limit: int) -> aiohttp.ClientSession:
    """One session for the whole run. limit=0 (unlimited) for open loops: the client must never queue.

    `sent` is stamped when the request body is handed to the socket (aiohttp's chunk-sent trace), not
    when the coroutine asks to send: on Python < 3.12 aiohttp writes the body from a task that waits
    behind every other stream's callbacks, and that wait is the client's delay, which belongs in
    lateness (sent - scheduled), not in the server's TTFT.
    """
    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(_stamp_body_sent)
    connector = aiohttp.TCPConnector(limit=connection_limit, limit_per_host=0, ttl_dns_cache=300,
                                     keepalive_timeout=KEEPALIVE_S)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        read_bufsize=2**20,
        trace_configs=[trace],
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def open_connections(session: aiohttp.ClientSession, target: Target, count: int) -> None:
    """Open `count` keep-alive connections before the clock starts, so the first wave of a run measures
    the server rather than a burst of simultaneous TCP handshakes. Failures are left for the run to report."""
    url = target.base_url.rstrip("/") + "/v1/models"

    async def one() -> None:
        try:
            async with session.get(url, headers=target.headers, allow_redirects=False) as resp:
                await resp.read()
        except (aiohttp.ClientError, OSError):
            pass

    await asyncio.gather(*(one() for _ in range(count)))


def _is_event_stream(content_type: str) -> bool:
    """A JSON or HTML body is a server's answer instead of a stream (an error, or `stream` ignored); a missing
    or plain-text type is read as a stream, which then has to prove it is one."""
    return content_type not in ("application/json", "text/html", "application/problem+json")


async def _read_up_to(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body's first `limit` bytes (or all of a shorter one): an error page can be any size."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        part = await resp.content.read(limit - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


_SSE_FIELDS = (b"data", b":", b"event", b"id", b"retry", b"\xef\xbb\xbf")


def _looks_like_sse(head: bytes) -> bool:
    first = head.lstrip(b"\r\n")
    return not first or first.startswith(_SSE_FIELDS)


def _quote(body: bytes | str) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text[:BODY_QUOTE_LIMIT] + ("..." if len(text) > BODY_QUOTE_LIMIT else "")


async def _http_error(resp: aiohttp.ClientResponse) -> tuple[str, str]:
    """A status other than 200. A redirect is recorded, never followed: following it would measure another URL
    (another server, for a cross-origin 307/308) or resend as a GET (301/302/303)."""
    if 300 <= resp.status < 400:
        where = _without_credentials(resp.headers.get("Location", "(no Location header)"))
        return "error:http", f"HTTP {resp.status} redirect to {where} (not followed: point --url at the target)"
    body = (await _read_up_to(resp, ERROR_TEXT_LIMIT * 4)).decode(errors="replace")[:ERROR_TEXT_LIMIT]
    retry = resp.headers.get("Retry-After")
    return "error:http", f"HTTP {resp.status}: {body.strip()}" + (f" (Retry-After: {retry})" if retry else "")


def _without_credentials(location: str) -> str:
    """A Location as written into the record: never with a user or password in it."""
    try:
        url = URL(location)
    except ValueError:
        return location[:ERROR_TEXT_LIMIT]
    return str(url.with_user(None)) if url.user or url.password else location[:ERROR_TEXT_LIMIT]


async def _not_a_stream(resp: aiohttp.ClientResponse) -> str:
    """A 200 with a JSON or HTML body: the server's own message (an OpenAI-style error's, else the body's
    start), read no further than a few KiB."""
    body = await _read_up_to(resp, 16384)
    message: str | None = None
    if resp.content_type.endswith("json"):
        try:
            parsed = json.loads(body)
            err = parsed.get("error") if isinstance(parsed, dict) else None
            message = (err.get("message") if isinstance(err, dict) else err) or None
        except ValueError:
            pass
    return f"200 with a {resp.content_type} body, not an event stream: " + _quote(str(message) if message else body)


async def send_request(
    session: aiohttp.ClientSession,
    target: Target,
    spec: RequestSpec,
    origin_ns: int,
    phase: str,
    scheduled_s: float | None,
    timeout_s: float | None,
    idle_timeout_s: float | None = None,
    activity: StreamActivity | None = None,
) -> RequestRecord | None:
    if activity is None:
        activity = StreamActivity()
    parser = target.protocol.parser(collect_text=target.count_tokens is not None)
    body = json.dumps(target.protocol.payload(target.model, spec.prompt, spec.output_tokens)).encode()
    chunk_ns: list[int] = []
    chunk_tokens: list[int] = []
    status, http_status, error = OK, None, None
    clock = time.perf_counter_ns
    body_sent = [0]  # filled by the session's trace when the body reaches the socket
    requested_ns = clock()
    activity.begin()
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(target.parsed_url, data=body, headers=target.request_headers,
                                    trace_request_ctx=body_sent, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=30,
                                                                  sock_read=idle_timeout_s)) as resp:
                http_status = resp.status
                if resp.status != 200:
                    status, error = await _http_error(resp)
                elif not _is_event_stream(resp.content_type):
                    status, error = "error:stream", await _not_a_stream(resp)
                else:
                    # One wake-up per network read (not per SSE line); lines read together share a stamp.
                    reader, head = LineReader(), b""
                    async for data in resp.content.iter_any():
                        now = activity.last_byte_ns = clock()
                        if not head:
                            head = data[:200]  # quoted if the body turns out not to be an event stream
                        for line in reader.feed(data):
                            k = parser.feed(line)
                            if k:
                                chunk_ns.append(now)
                                chunk_tokens.append(k)
                        if parser.done:
                            break
                    if not parser.done:
                        rest = reader.rest()
                        if rest:
                            k = parser.feed(rest)
                            if k:
                                chunk_ns.append(clock())
                                chunk_tokens.append(k)
                        parser.end()
                    if parser.done_at_eof and not parser.error:
                        parser.done = True  # protocols without an end marker: a clean end of stream
                    if parser.error:
                        status, error = "error:stream", parser.error
                    elif not parser.events and not _looks_like_sse(head):
                        status, error = "error:stream", "200 but not an event stream: " + _quote(head)
                    elif not parser.done:
                        status, error = "error:stream", "stream ended before [DONE]"
                    elif not chunk_ns:
                        status, error = "error:empty", "stream finished without any tokens"
    except LineTooLong as exc:
        status, error = "error:stream", str(exc)
    except aiohttp.ServerTimeoutError:  # aiohttp's sock_read: no bytes for idle_timeout_s
        status, error = TIMEOUT, f"idle: no data for {idle_timeout_s:g} s"
    except TimeoutError:
        status, error = TIMEOUT, f"no complete response within {timeout_s:g} s"
    except asyncio.CancelledError:
        status, error = CANCELLED, "cancelled before the response completed"
    except aiohttp.ClientPayloadError as exc:
        status, error = "error:stream", f"connection closed mid-stream ({exc.__class__.__name__})"
    except aiohttp.ClientResponseError as exc:
        status, error = "error:http", str(exc)
    except (aiohttp.ClientError, OSError) as exc:
        status, error = "error:connection", f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]
    finally:
        activity.end()
    finished_ns = clock()
    if status == CANCELLED and not body_sent[0]:
        return None  # stopped before its bytes left: never sent, so no record (the server never saw it)
    sent_ns = body_sent[0] or requested_ns  # never written (connection refused): when it was attempted

    usage = parser.usage or {}
    out_usage, in_usage = usage.get("completion_tokens"), usage.get("prompt_tokens")
    out_source = "usage"
    if not isinstance(out_usage, int):
        if target.count_tokens is not None and parser.text:
            out_usage, out_source = target.count_tokens("".join(parser.text)), "tokenizer"
        else:
            out_usage, out_source = sum(chunk_tokens), "chunks"
    to_s = 1e-9
    return RequestRecord(
        index=spec.index,
        phase=phase,
        status=status,
        sent_s=(sent_ns - origin_ns) * to_s,
        finished_s=(finished_ns - origin_ns) * to_s,
        scheduled_s=scheduled_s,
        first_token_s=(chunk_ns[0] - origin_ns) * to_s if chunk_ns else None,
        target_input_tokens=spec.input_tokens,
        target_output_tokens=spec.output_tokens,
        input_tokens=in_usage if isinstance(in_usage, int) else spec.input_tokens,
        input_tokens_source="usage" if isinstance(in_usage, int) else "target",
        output_tokens=out_usage,
        output_tokens_source=out_source,
        token_times_ms=[round((t - sent_ns) * 1e-6, 4) for t in chunk_ns],
        chunk_tokens=chunk_tokens if any(k != 1 for k in chunk_tokens) else None,
        http_status=http_status,
        error=error,
        response_id=parser.response_id,
    )
