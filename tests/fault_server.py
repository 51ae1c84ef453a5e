"""A byte-level fault server, for tests only: OpenAI-compatible streaming written by hand on raw asyncio
streams (no HTTP library), so every byte on the wire is the test's choice: line ends, chunk boundaries,
broken framing, resets.

Each request's behaviour (its mode) is, in order: the path's `/fault/<mode>/` prefix (`--url
http://host:port/fault/crlf`), the request's `model` when it names a mode, else the next of a seeded,
deterministic sequence built from --mix (e.g. ok:4,http500:1,cut:1; --in-order: as written). GET /fault/log says how many requests
got each mode (`served` is the total, so a test can check sent == records) and when the last requests' first
and second tokens were written (time.perf_counter_ns, CLOCK_MONOTONIC like the client's stamps).

--stall-after N makes the whole server stall once N completions were asked for, as an engine that died behind a
live HTTP front (LightLLM on an H200, CUDA out of memory): every stream, those in progress included, goes silent
at its next write, and new requests get their headers and then nothing; --log-error TEXT is then printed to stderr,
as the engine's last words. Flags it does not know (a framework's launch argv, through loadgen's --engine-cmd)
are ignored.

    python tests/fault_server.py --port 8000 --mix ok:3,http500:1 --tokens 8 --itl 0.002
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import struct
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field

# mode -> what it sends. Stream modes send --tokens tokens unless said otherwise.
MODES = {
    # well-formed
    "ok": "a well-formed stream (chunked), final usage chunk, [DONE]",
    "close": "a well-formed stream delimited by closing the connection (no Content-Length, no chunking)",
    "slow": "ok, with a slow first token (--slow-first)",
    "crlf": "ok, every line ended by CRLF",
    "cr": "ok, every line ended by CR alone",
    "fragmented": "ok with CRLF, written a few bytes at a time with CR and LF in different reads",
    "multiline": "ok, each event's JSON over several data: lines (joined with LF by the SSE spec)",
    "bom": "ok, with a UTF-8 byte order mark before the first event",
    "fields": "ok, with comment lines (: ping) and event:, id:, retry: fields",
    "usagetail": "tokens, then a final chunk with empty text, finish_reason and usage (no choices: [] chunk)",
    # breaks the wire format after the first chunk
    "twojson": "a line holding two JSON objects",
    "brackets": "a line with mismatched brackets",
    "badutf8": "a line with invalid UTF-8 in its text",
    "badshape": "a JSON object of the wrong shape (choices is a string)",
    "malformed": "a line that is not JSON inside an otherwise good stream",
    "truncated": "tokens, then a clean end of the body without [DONE]",
    "oversized": "one data: line of --oversized-mib MiB without a newline, then the end",
    # not a stream
    "json200": "200 with a JSON error body instead of a stream",
    "html200": "200 with an HTML error page instead of a stream",
    "empty": "200, a stream with no tokens",
    "http500": "500 with a JSON error body",
    "http429": "429 with Retry-After: 2",
    "redirect301": "301 to the same origin's /fault/ok/ path",
    "redirect302": "302 to the same origin's /fault/ok/ path",
    "redirect307": "307 to another origin (localhost instead of 127.0.0.1) serving ok",
    "redirect308": "308 to the same origin's /fault/ok/ path",
    # transport
    "stall": "headers, then silence",
    "stallmid": "half the tokens, then silence",
    "cut": "half the tokens, then the connection closed (the chunked body never finished)",
    "resetmid": "half the tokens, then a TCP reset",
    "reset": "the connection reset before any response",
}
BEHAVIOURS = tuple(MODES)
REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 307: "Temporary Redirect",
           308: "Permanent Redirect", 429: "Too Many Requests", 500: "Internal Server Error", 404: "Not Found"}


def parse_mix(text: str) -> list[str]:
    sequence: list[str] = []
    for part in text.split(","):
        name, _, weight = part.partition(":")
        if name not in MODES:
            raise SystemExit(f"unknown behaviour {name!r}; choose from {', '.join(MODES)}")
        sequence += [name] * int(weight or 1)
    return sequence


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Disconnect(Exception):
    """The response ends the connection (close-delimited, cut, reset)."""


@dataclass
class FaultServer:
    mix: str = "ok"
    tokens: int = 8
    itl: float = 0.002
    slow_first: float = 0.3
    seed: int = 0
    oversized_mib: int = 96
    port: int = 0
    in_order: bool = False  # the --mix sequence as written, not shuffled
    stall_after: int | None = None  # completions asked for, after which the whole server goes silent
    log_error: str | None = None  # printed to stderr when it does
    stalled: bool = False
    counts: Counter = field(default_factory=Counter)
    served: int = 0
    first_tokens: deque = field(default_factory=lambda: deque(maxlen=64))

    def __post_init__(self) -> None:
        self.sequence = parse_mix(self.mix)
        if not self.in_order:
            random.Random(self.seed).shuffle(self.sequence)

    # ---- HTTP/1.1 by hand ----

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                await self._respond(request, writer)
        except (Disconnect, ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # cancelled: the server is stopping with a stalled stream still open
        finally:
            if not writer.is_closing():
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Request(method, path, headers, body)

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _whole(self, writer, status: int, body: bytes, content_type: str, **extra: str) -> None:
        writer.write(self._head(status, {"Content-Type": content_type, "Content-Length": str(len(body)), **extra})
                     + body)
        await writer.drain()

    # ---- routes ----

    async def _respond(self, request: Request, writer: asyncio.StreamWriter) -> None:
        path = request.path.split("?", 1)[0]
        if request.method == "GET":
            if path == "/health":
                return await self._whole(writer, 200, b"ok", "text/plain")
            if path.endswith("/v1/models"):
                body = {"object": "list", "data": [{"id": "fault-model", "object": "model", "max_model_len": 4096}]}
                return await self._whole(writer, 200, json.dumps(body).encode(), "application/json")
            if path == "/fault/log":
                body = {"counts": dict(self.counts), "served": self.served, "first_tokens": list(self.first_tokens)}
                return await self._whole(writer, 200, json.dumps(body).encode(), "application/json")
        if request.method == "POST" and path.endswith(("/v1/completions", "/v1/chat/completions")):
            return await self._completion(request, path, writer)
        await self._whole(writer, 404, b'{"error":{"message":"not found"}}', "application/json")

    def _mode(self, path: str, body: bytes) -> str:
        parts = path.split("/")
        if len(parts) > 3 and parts[1] == "fault" and parts[2] in MODES:
            return parts[2]
        try:
            model = json.loads(body).get("model")
        except (ValueError, AttributeError):
            model = None
        if model in MODES:
            return model
        mode = self.sequence[self.served % len(self.sequence)]
        return mode

    async def _completion(self, request: Request, path: str, writer: asyncio.StreamWriter) -> None:
        mode = self._mode(path, request.body)
        self.served += 1
        self.counts[mode] += 1
        if self.stall_after is not None and self.served > self.stall_after and not self.stalled:
            self.stalled = True
            if self.log_error:
                print(self.log_error, file=sys.stderr, flush=True)
        chat = path.endswith("/chat/completions")
        endpoint = "/v1/chat/completions" if chat else "/v1/completions"
        if mode == "reset":
            _reset(writer)
            raise Disconnect
        if mode == "http500":
            return await self._whole(writer, 500, b'{"error":{"message":"internal error"}}', "application/json")
        if mode == "http429":
            return await self._whole(writer, 429, b'{"error":{"message":"too many requests"}}', "application/json",
                                     **{"Retry-After": "2"})
        if mode.startswith("redirect"):
            code = int(mode[-3:])
            origin = f"http://localhost:{self.port}" if code == 307 else ""
            return await self._whole(writer, code, b"", "text/plain", Location=f"{origin}/fault/ok{endpoint}")
        if mode == "json200":
            body = b'{"error":{"message":"the model is overloaded, try again later","type":"server_error"}}'
            return await self._whole(writer, 200, body, "application/json")
        if mode == "html200":
            page = (b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"
                    b"<p>upstream inference server unavailable</p>" + b"<!-- padding -->" * 500 + b"</body></html>")
            return await self._whole(writer, 200, page, "text/html; charset=utf-8")
        await self._stream(mode, chat, writer)

    # ---- streams ----

    def _chunk(self, i: int, chat: bool, finish: str | None = None, text: str | None = None) -> dict:
        piece = f" t{i}" if text is None else text
        choice = ({"index": 0, "delta": {"content": piece}, "finish_reason": finish} if chat
                  else {"index": 0, "text": piece, "finish_reason": finish})
        return {"id": "cmpl-fault", "object": "chat.completion.chunk" if chat else "text_completion",
                "model": "fault-model", "choices": [choice]}

    def _event(self, body: dict | bytes, mode: str) -> bytes:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if mode == "multiline" and not isinstance(body, bytes):
            lines = json.dumps(body, indent=1).encode().split(b"\n")
            event = b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
        elif mode == "fields":
            event = b": ping\nevent: message\nid: 7\nretry: 1000\ndata: " + data + b"\n\n"
        else:
            event = b"data: " + data + b"\n\n"
        if mode in ("crlf", "fragmented"):
            event = event.replace(b"\n", b"\r\n")
        elif mode == "cr":
            event = event.replace(b"\n", b"\r")
        return event

    async def _stream(self, mode: str, chat: bool, writer: asyncio.StreamWriter) -> None:
        close_delimited = mode == "close"
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        headers.update({"Connection": "close"} if close_delimited else {"Transfer-Encoding": "chunked"})
        writer.write(self._head(200, headers))
        await writer.drain()
        chunked = not close_delimited

        async def send(data: bytes) -> None:
            if not data:
                return
            if self.stalled:
                await asyncio.sleep(3600)
            if mode == "fragmented":  # CR at the end of one read, LF at the start of the next
                pieces, start = [], 0
                for at in range(len(data)):
                    if data[at:at + 1] == b"\r" or at - start >= 7:
                        pieces.append(data[start:at + 1])
                        start = at + 1
                pieces.append(data[start:])
                for piece in filter(None, pieces):
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                    await asyncio.sleep(0.001)
                return
            writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            await writer.drain()

        if mode == "stall":
            await asyncio.sleep(3600)
        if mode == "slow":
            await asyncio.sleep(self.slow_first)
        if mode == "bom":
            await send(b"\xef\xbb\xbf")
        if mode == "oversized":
            await send(b'data: {"id":"cmpl-fault","choices":[{"index":0,"text":"')
            block = b"a" * (1 << 16)
            for _ in range(self.oversized_mib * 16):
                await send(block)
            raise Disconnect
        n = 0 if mode == "empty" else self.tokens
        stamps: list[int] = []
        for i in range(n):
            if i == n // 2 and mode in ("cut", "resetmid", "stallmid"):
                if mode == "stallmid":
                    await asyncio.sleep(3600)
                if mode == "resetmid":
                    _reset(writer)
                raise Disconnect
            if i == n // 2 and i > 0:
                broken = {"twojson": b'{"id":"cmpl-fault","choices":[{"text":" a"}]}{"id":"cmpl-fault","choices":[]}',
                          "brackets": b'{"id":"cmpl-fault","choices":[{"index":0,"text":" b"]}}',
                          "badutf8": b'{"id":"cmpl-fault","choices":[{"index":0,"text":" \xff\xfe"}]}',
                          "badshape": b'{"id":"cmpl-fault","choices":"oops"}',
                          "malformed": b"{this is not json"}.get(mode)
                if broken is not None:
                    await send(self._event(broken, mode))
            last = i == n - 1
            stamps.append(time.perf_counter_ns())  # before the write: the client cannot have read it earlier
            await send(self._event(self._chunk(i, chat, "length" if last and mode != "usagetail" else None), mode))
            if len(stamps) == 2:
                self.first_tokens.append({"mode": mode, "first_ns": stamps[0], "second_ns": stamps[1]})
            await asyncio.sleep(self.itl)
        usage = {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}
        if mode == "usagetail":
            tail = self._chunk(n, chat, "length", text="")
            await send(self._event({**tail, "usage": usage}, mode))
        elif mode != "truncated":
            await send(self._event({"id": "cmpl-fault", "choices": [], "usage": usage}, mode))
        if mode != "truncated":
            await send(self._event(b"[DONE]", mode))
        if close_delimited:
            await writer.drain()
            raise Disconnect
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def serve(self, host: str = "127.0.0.1", port: int = 0, on_started=None) -> None:
        server = await asyncio.start_server(self.handle, host, port)
        self.port = server.sockets[0].getsockname()[1]
        if on_started is not None:
            on_started(self.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN: SO_LINGER on with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mix", default="ok", help="mode:weight,... from: " + ", ".join(MODES))
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--itl", type=float, default=0.002)
    parser.add_argument("--slow-first", type=float, default=0.3)
    parser.add_argument("--oversized-mib", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-order", action="store_true", help="the --mix sequence as written, not shuffled")
    parser.add_argument("--stall-after", type=int, default=None)
    parser.add_argument("--log-error", default=None)
    args, _ = parser.parse_known_args()  # a framework's flags, when launched through --engine-cmd
    server = FaultServer(args.mix, args.tokens, args.itl, args.slow_first, args.seed, args.oversized_mib,
                         in_order=args.in_order, stall_after=args.stall_after, log_error=args.log_error)
    asyncio.run(server.serve("127.0.0.1", args.port,
                             lambda port: print(f"fault server on 127.0.0.1:{port}", flush=True)))


if __name__ == "__main__":
    main()
