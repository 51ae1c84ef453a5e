"""A fault-injecting OpenAI-compatible streaming server, for tests only.

Each request gets the next behaviour of a deterministic, seeded sequence built from --mix
(e.g. ok:4,http500:1,cut:1): ok, slow (slow first token), http500, http429 (with Retry-After),
cut (stream closed mid-way), malformed (a broken SSE line inside a good stream), stall (headers, then
silence), empty (200 with no tokens), reset (connection closed before any response).
GET /fault/log tells how many requests got each behaviour.

    python tests/fault_server.py --port 8000 --mix ok:3,http500:1 --tokens 8 --itl 0.002
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections import Counter

from aiohttp import web

from backends.eventloop import serve_until_stopped

BEHAVIOURS = ("ok", "slow", "http500", "http429", "cut", "malformed", "stall", "empty", "reset")


def parse_mix(text: str) -> list[str]:
    sequence: list[str] = []
    for part in text.split(","):
        name, _, weight = part.partition(":")
        if name not in BEHAVIOURS:
            raise SystemExit(f"unknown behaviour {name!r}; choose from {', '.join(BEHAVIOURS)}")
        sequence += [name] * int(weight or 1)
    return sequence


class FaultServer:
    def __init__(self, mix: str, tokens: int, itl: float, slow_first: float, seed: int = 0):
        self.sequence = parse_mix(mix)
        random.Random(seed).shuffle(self.sequence)
        self.tokens, self.itl, self.slow_first = tokens, itl, slow_first
        self.counts: Counter = Counter()
        self.served = 0
        self.app = web.Application()
        self.app.add_routes([
            web.post("/v1/completions", self.completions),
            web.post("/v1/chat/completions", self.completions),
            web.get("/v1/models", self.models),
            web.get("/health", self.health),
            web.get("/fault/log", self.log),
        ])

    async def health(self, request):
        return web.Response(text="ok")

    async def models(self, request):
        return web.json_response({"data": [{"id": "fault-model", "object": "model", "max_model_len": 4096}]})

    async def log(self, request):
        return web.json_response({"counts": dict(self.counts), "served": self.served})

    def _chunk(self, i: int, finish: str | None = None) -> bytes:
        body = {"id": "cmpl-fault", "object": "text_completion", "model": "fault-model",
                "choices": [{"index": 0, "text": f" t{i}", "finish_reason": finish}]}
        return f"data: {json.dumps(body)}\n\n".encode()

    async def completions(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        behaviour = self.sequence[self.served % len(self.sequence)]
        self.served += 1
        self.counts[behaviour] += 1
        if behaviour == "reset":
            request.transport.close()
            return web.Response(status=500)  # never sent: the connection is gone
        if behaviour == "http500":
            return web.json_response({"error": {"message": "internal error"}}, status=500)
        if behaviour == "http429":
            return web.json_response({"error": {"message": "too many requests"}}, status=429,
                                     headers={"Retry-After": "2"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if behaviour == "stall":
            await asyncio.sleep(3600)
        if behaviour == "slow":
            await asyncio.sleep(self.slow_first)
        n = 0 if behaviour == "empty" else self.tokens
        for i in range(n):
            if behaviour == "cut" and i == n // 2:
                request.transport.close()
                return resp
            if behaviour == "malformed" and i == n // 2:
                await resp.write(b"data: {this is not json\n\n")
            await resp.write(self._chunk(i, "length" if i == n - 1 else None))
            await asyncio.sleep(self.itl)
        usage = {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}
        await resp.write(f'data: {json.dumps({"id": "cmpl-fault", "choices": [], "usage": usage})}\n\n'.encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mix", default="ok")
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--itl", type=float, default=0.002)
    parser.add_argument("--slow-first", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    server = FaultServer(args.mix, args.tokens, args.itl, args.slow_first, args.seed)

    serve_until_stopped(server.app, "127.0.0.1", args.port,
                        lambda port: print(f"fault server on 127.0.0.1:{port}", flush=True))

if __name__ == "__main__":
    main()
