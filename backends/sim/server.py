"""The simulated engine's HTTP face: a real OpenAI-compatible streaming server on 127.0.0.1, timed by the engine.

Ground truth for measuring a client's own error: every request's server-side receive, first-token-write
and finish times on `time.perf_counter_ns()` (CLOCK_MONOTONIC on Linux, shared by all processes of the
host), served at GET /sim/requests. Everything here is simulated and says so (`/sim/info`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import asdict, dataclass

from aiohttp import web

from backends.sim.config import SimConfig
from backends.sim.engine import SimEngine
from backends.sim.scheduler import SimRequest, TokenEvent

# The sim's tokenizer: one whitespace-separated word is one token. loadgen's prompt approximation
# writes exactly one word per token, so both sides agree on input lengths without a real tokenizer.
OUTPUT_WORDS = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "on")


def count_prompt_tokens(prompt: object) -> int:
    if isinstance(prompt, str):
        return len(prompt.split())
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    raise ValueError("prompt must be a string or a list of token ids")


def count_chat_tokens(messages: object) -> int:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    total = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ValueError("each message needs a string 'content'")
        total += len(content.split())
    return total


@dataclass
class GroundTruth:
    id: str
    received_ns: int
    prompt_tokens: int
    max_tokens: int
    first_token_ns: int | None = None
    finished_ns: int | None = None
    completion_tokens: int = 0
    preemptions: int = 0
    status: str = "running"
    # Fixed timing only: when its first and last token were due. The stamps above can only be later (by how late
    # this machine woke the sim); a test checks the schedule exactly with these, whatever the machine's load.
    due_first_token_ns: int | None = None
    due_finished_ns: int | None = None


def _note_due(truth: GroundTruth, ev: TokenEvent) -> None:
    if ev.due_s is not None:
        due_ns = round(ev.due_s * 1e9)
        if truth.due_first_token_ns is None:
            truth.due_first_token_ns = due_ns
        if ev.finished:
            truth.due_finished_ns = due_ns


class SimServer:
    """aiohttp application speaking OpenAI /v1/completions and /v1/chat/completions (streaming or not)."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.engine: SimEngine | None = None
        self.ground_truth: dict[str, GroundTruth] = {}
        self._ids = itertools.count()
        self.app = web.Application()
        self.app.add_routes(
            [
                web.post("/v1/completions", self.completions),
                web.post("/v1/chat/completions", self.chat_completions),
                web.get("/v1/models", self.models),
                web.get("/health", self.health),
                web.get("/metrics", self.metrics),
                web.get("/sim/requests", self.sim_requests),
                web.get("/sim/info", self.sim_info),
            ]
        )
        self.app.on_startup.append(self._on_startup)
        self.app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, app: web.Application) -> None:
        self.engine = SimEngine(self.config, asyncio.get_running_loop())
        self.engine.start()

    async def _on_cleanup(self, app: web.Application) -> None:
        if self.engine:
            self.engine.stop()

    # -- info endpoints ---------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.config.name, "object": "model", "owned_by": "dissect-sim",
                                         "max_model_len": self.config.model.max_context}]}
        )

    async def sim_info(self, request: web.Request) -> web.Response:
        cfg = self.config
        assert self.engine is not None
        return web.json_response(
            {
                "simulated": True,
                "model": cfg.model.name,
                "gpu": cfg.gpu.key,
                "tp": cfg.tp,
                "kv_capacity_tokens": self.engine.kv_capacity_tokens,
                "max_num_seqs": cfg.max_num_seqs,
                "max_batched_tokens": cfg.max_batched_tokens,
                "cost_params": asdict(cfg.cost),
                "cost_model": cfg.cost_model,
                "profile_device": cfg.profile.device if cfg.profile is not None else None,
                "warnings": cfg.warnings,
                "clock": "time.perf_counter_ns (CLOCK_MONOTONIC)",
            }
        )

    async def sim_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": [asdict(g) for g in self.ground_truth.values()]})

    async def metrics(self, request: web.Request) -> web.Response:
        assert self.engine is not None
        s = self.engine.scheduler
        name = self.config.name
        lines = [
            "# HELP vllm:num_requests_running Number of requests in the running batch (simulated).",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="{name}"}} {len(s.running)}',
            "# HELP vllm:num_requests_waiting Number of requests waiting (simulated).",
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{model_name="{name}"}} {len(s.waiting)}',
            "# HELP vllm:kv_cache_usage_perc KV-cache usage, 1 = full (simulated).",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f'vllm:kv_cache_usage_perc{{model_name="{name}"}} {s.kv_usage:.6f}',
            "# HELP vllm:num_preemptions_total Preemptions (simulated).",
            "# TYPE vllm:num_preemptions_total counter",
            f'vllm:num_preemptions_total{{model_name="{name}"}} {s.preemptions}',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    # -- generation -------------------------------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    def _error(self, status: int, message: str) -> web.Response:
        return web.json_response(
            {"error": {"message": message, "type": "BadRequestError", "code": status}}, status=status
        )

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        received_ns = time.perf_counter_ns()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return self._error(400, "request body must be a JSON object")
        try:
            prompt_tokens = count_chat_tokens(body.get("messages")) if chat else count_prompt_tokens(body.get("prompt"))
        except ValueError as exc:
            return self._error(400, str(exc))
        default_max = 16 if not chat else 256
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self._error(400, "max_tokens must be a positive integer")
        limit = self.config.model.max_context
        if prompt_tokens + max_tokens > limit:
            return self._error(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion).",
            )
        assert self.engine is not None
        if not self.engine.scheduler.fits(prompt_tokens, max_tokens):
            return self._error(400, "request needs more KV-cache blocks than the engine has")

        rid = f"{'chatcmpl' if chat else 'cmpl'}-sim{next(self._ids)}"
        truth = GroundTruth(rid, received_ns, prompt_tokens, max_tokens)
        self.ground_truth[rid] = truth
        if not self.config.fixed:
            # through the front end (behind the tokens it is streaming), then input processing before the engine
            ready = self.engine.frontend.intake(time.perf_counter()) + self.config.cost.request_overhead_s
            if ready > time.perf_counter():
                await asyncio.sleep(ready - time.perf_counter())
        queue = self.engine.submit(SimRequest(rid, prompt_tokens, max_tokens, received_s=received_ns * 1e-9))
        stream = bool(body.get("stream", False))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage", False))
        created = int(time.time())
        model = body.get("model") or self.config.name
        head = (
            f'{{"id":"{rid}","object":"{"chat.completion.chunk" if chat else "text_completion"}",'
            f'"created":{created},"model":{json.dumps(model)},"choices":[{{"index":0,'
        )
        try:
            if stream:
                return await self._stream(request, queue, truth, head, chat, include_usage)
            return await self._whole(queue, truth, rid, created, model, chat)
        except (asyncio.CancelledError, ConnectionResetError):
            truth.status = "cancelled"
            self.engine.abort(rid)
            raise
        finally:
            if truth.status == "running":
                truth.status = "aborted"
                self.engine.abort(rid)

    async def _stream(self, request, queue, truth: GroundTruth, head: str, chat: bool, include_usage: bool):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        if chat:
            await resp.write(f'data: {head}"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}\n\n'.encode())
        n = 0
        while True:
            ev = await queue.get()
            word = OUTPUT_WORDS[n % len(OUTPUT_WORDS)]
            n += ev.tokens
            finish = '"length"' if ev.finished else "null"
            payload = f'"delta":{{"content":" {word}"}}' if chat else f'"text":" {word}","logprobs":null'
            chunk = f"data: {head}{payload},\"finish_reason\":{finish}}}]}}\n\n"
            if truth.first_token_ns is None:
                truth.first_token_ns = time.perf_counter_ns()
            _note_due(truth, ev)
            await resp.write(chunk.encode())
            if ev.finished:
                break
        truth.completion_tokens = n
        tail = ""
        if include_usage:
            usage = {"prompt_tokens": truth.prompt_tokens, "completion_tokens": n,
                     "total_tokens": truth.prompt_tokens + n}
            prefix = head[: head.rindex(',"choices"')]
            tail = f'data: {prefix},"choices":[],"usage":{json.dumps(usage)}}}\n\n'
        await resp.write((tail + "data: [DONE]\n\n").encode())
        truth.finished_ns = time.perf_counter_ns()
        truth.status = "ok"
        await resp.write_eof()
        return resp

    async def _whole(self, queue, truth: GroundTruth, rid: str, created: int, model: str, chat: bool):
        n = 0
        while True:
            ev = await queue.get()
            if truth.first_token_ns is None:
                truth.first_token_ns = time.perf_counter_ns()
            _note_due(truth, ev)
            n += ev.tokens
            if ev.finished:
                break
        text = "".join(" " + OUTPUT_WORDS[i % len(OUTPUT_WORDS)] for i in range(n))
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
            if chat
            else {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        )
        truth.completion_tokens = n
        truth.finished_ns = time.perf_counter_ns()
        truth.status = "ok"
        return web.json_response(
            {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": {"prompt_tokens": truth.prompt_tokens, "completion_tokens": n,
                          "total_tokens": truth.prompt_tokens + n},
            }
        )
