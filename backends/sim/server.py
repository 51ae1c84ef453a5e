"""The embedded simulated engine: a real OpenAI-compatible streaming HTTP server timed by an engine model.

The engine runs in its own thread with a precise sleep (asyncio's timers round to whole milliseconds,
which would distort few-millisecond decode steps) and a virtual clock: each iteration starts when the
previous one was due to end, so wake-up jitter never accumulates into the simulated throughput.
Tokens are handed to the event loop, which streams them as SSE chunks.

Ground truth for measuring a client's own error: every request's server-side receive, first-token-write
and finish times on `time.perf_counter_ns()` (CLOCK_MONOTONIC on Linux, shared by all processes of the
host), served at GET /sim/requests. Everything here is simulated and says so (`/sim/info`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import itertools
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from dataclasses import asdict, dataclass, field

from aiohttp import web

from backends.errors import BackendError
from backends.http_server import serve_until_stopped
from backends.profile_cost import Profile
from backends.roofline import EngineCostParams, IterationCost, SeqWork, iteration_cost, memory_plan
from backends.sim_scheduler import ContinuousBatchScheduler, SimRequest, TokenEvent
from scenarios.catalog import CatalogError, GPUSpec, ModelSpec, get_gpu, get_model

log = logging.getLogger("backends.sim")

# The engine thread re-anchors its virtual clock when it is this far behind the real one.
STALL_S = 0.02
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
class SimConfig:
    model: ModelSpec
    gpu: GPUSpec
    tp: int = 1
    served_model_name: str | None = None
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    cost: EngineCostParams = field(default_factory=EngineCostParams)
    profile: Profile | None = None
    # Fixed timing instead of the engine model: first token `fixed_ttft_s` after arrival, then one every
    # `fixed_itl_s`, per request and regardless of load -- a target whose ground truth is known exactly, for
    # measuring a load generator's own limits (benchmarks/loadgen_capacity.py).
    fixed_ttft_s: float | None = None
    fixed_itl_s: float | None = None

    @property
    def fixed(self) -> bool:
        return self.fixed_ttft_s is not None or self.fixed_itl_s is not None

    @property
    def name(self) -> str:
        return self.served_model_name or self.model.name

    @property
    def cost_model(self) -> str:
        if self.fixed:
            return (f"fixed timing: TTFT {(self.fixed_ttft_s or 0) * 1e3:g} ms, then a token every "
                    f"{(self.fixed_itl_s or 0) * 1e3:g} ms per request, independent of load (no engine model)")
        if self.profile is not None:
            return self.profile.describe(self.model)
        return (f"roofline from catalog datasheet peaks ({self.gpu.name}: {self.gpu.peak_bf16_tflops:g} TFLOP/s, "
                f"{self.gpu.hbm_bandwidth_gbs:g} GB/s) with documented efficiencies")

    @property
    def warnings(self) -> list[str]:
        """What a user must know before trusting these timings (printed at start, kept in summary.json)."""
        mismatch = self.profile.device_mismatch(self.gpu) if self.profile is not None and not self.fixed else None
        return [mismatch] if mismatch else []

    def step_cost(self, work: list[SeqWork]) -> IterationCost:
        if self.profile is not None:
            return self.profile.iteration_cost(self.model, self.gpu, self.tp, work, self.cost)
        return iteration_cost(self.model, self.gpu, self.tp, work, self.cost)


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


class FrontEnd:
    """The serving front end (API server) as one first-in-first-out worker on a clock of seconds: each streamed
    token costs it `token_s`; a new request is taken in once the tokens ahead of it are processed. Used by the
    live sim and by the virtual-time replay, so both wait the same way."""

    def __init__(self, token_s: float):
        self.token_s = token_s
        self.free_at = 0.0

    def intake(self, t: float) -> float:
        """When a request that arrived at `t` is through the front end."""
        self.free_at = max(self.free_at, t)
        return self.free_at

    def deliver(self, t: float, tokens: int) -> float:
        """When `tokens` produced by a step that ended at `t` reach the client."""
        self.free_at = max(self.free_at, t) + tokens * self.token_s
        return self.free_at


class ArrivalLag:
    """Requests that reach a busy engine wait `steps` more step boundaries before they may be scheduled (the
    engine plans a step ahead); an idle engine takes them at once. Used by the live sim and the replay."""

    def __init__(self, steps: int):
        self._held: list[list[SimRequest]] = [[] for _ in range(steps)]

    def boundary(self, scheduler: ContinuousBatchScheduler) -> None:
        """A step boundary: the requests whose wait is over join the scheduler."""
        if self._held:
            for request in self._held.pop(0):
                scheduler.add(request)
            self._held.append([])

    def arrive(self, scheduler: ContinuousBatchScheduler, request: SimRequest) -> None:
        if self._held and scheduler.has_work:
            self._held[-1].append(request)
        else:
            scheduler.add(request)

    def drop(self, rid: str) -> None:
        for held in self._held:
            held[:] = [r for r in held if r.rid != rid]

    @property
    def waiting(self) -> bool:
        return any(self._held)


class StepPipeline:
    """The engine's two clocks under asynchronous scheduling (vLLM's default): its CPU thread schedules step k+1 and
    launches its kernels while the GPU still runs step k, then waits for step k's output and hands it on. So a
    step's launch is hidden behind the GPU unless it is the longer (a step off the CUDA graph, launched kernel by
    kernel), its tokens leave once the next step is launched and its GPU work is done, and a request that arrives
    meanwhile is scheduled at the next such boundary. Used by the live sim and the replay, so both step alike."""

    def __init__(self) -> None:
        self.gpu_free = 0.0

    def launch(self, t: float, cost: IterationCost) -> tuple[float, float]:
        """A step scheduled at `t`: when its launches end (the CPU is free again) and when the GPU finishes it.
        The GPU takes kernels as they are launched, after the step before."""
        launched = t + cost.launch_s
        start = max(self.gpu_free, t)
        self.gpu_free = max(start + cost.seconds, launched + cost.tail_s)
        return launched, self.gpu_free


class SimEngine:
    """Owns the scheduler in a dedicated thread; the event loop talks to it through an inbox."""

    def __init__(self, config: SimConfig, loop: asyncio.AbstractEventLoop):
        self.config = config
        self.loop = loop
        plan = memory_plan(config.model, config.gpu, config.tp, config.gpu_memory_utilization)
        self.kv_capacity_tokens = plan.kv_capacity_tokens
        self.scheduler = ContinuousBatchScheduler(
            kv_capacity_tokens=plan.kv_capacity_tokens,
            block_size=config.block_size,
            max_num_seqs=config.max_num_seqs,
            max_batched_tokens=config.max_batched_tokens,
        )
        self._inbox: deque[tuple[str, object]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._queues: dict[str, asyncio.Queue[TokenEvent]] = {}
        self._due: list[tuple[float, int, str, int, int]] = []  # fixed timing: (due, seq, rid, token k, of n)
        self._seq = itertools.count()
        self.frontend = FrontEnd(config.cost.frontend_token_s)
        self._thread = threading.Thread(target=self._run_fixed if config.fixed else self._run, name="sim-engine",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def submit(self, request: SimRequest) -> asyncio.Queue[TokenEvent]:
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self._queues[request.rid] = queue
        self._inbox.append(("add", request))
        self._wake.set()
        return queue

    def abort(self, rid: str) -> None:
        self._queues.pop(rid, None)
        self._inbox.append(("abort", rid))
        self._wake.set()

    def _step_done(self, events: list[TokenEvent], ended: float) -> None:
        """In the event loop: the step's tokens go out once the front end has processed them."""
        shown = self.frontend.deliver(ended, sum(ev.tokens for ev in events))
        delay = shown - time.perf_counter()
        if delay > 0:
            self.loop.call_later(delay, self._deliver, events)
        else:
            self._deliver(events)

    def _deliver(self, events: list[TokenEvent]) -> None:
        for ev in events:
            queue = self._queues.get(ev.rid)
            if queue is not None:
                queue.put_nowait(ev)
                if ev.finished:
                    del self._queues[ev.rid]

    def _run_fixed(self) -> None:
        """Each request on its own clock: token k (1-based) due at arrival + TTFT + (k-1) * ITL."""
        ttft, itl = self.config.fixed_ttft_s or 0.0, self.config.fixed_itl_s or 0.0
        aborted: set[str] = set()
        while not self._stop.is_set():
            while self._inbox:
                op, arg = self._inbox.popleft()
                if op == "add":
                    req: SimRequest = arg  # type: ignore[assignment]
                    # from when the request was received, not when this thread got to it
                    start = req.received_s if req.received_s is not None else time.perf_counter()
                    heapq.heappush(self._due, (start + ttft, next(self._seq), req.rid, 1, req.max_tokens))
                else:
                    aborted.add(arg)  # type: ignore[arg-type]
            if not self._due:
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            remaining = self._due[0][0] - time.perf_counter()
            if remaining > 0:
                self._wake.wait(min(remaining, 0.05)) if remaining > 0.002 else time.sleep(remaining)
                self._wake.clear()
                if self._due[0][0] > time.perf_counter():
                    continue
            events = []
            now = time.perf_counter()
            while self._due and self._due[0][0] <= now:
                due, _, rid, k, n = heapq.heappop(self._due)
                if rid in aborted:
                    continue
                events.append(TokenEvent(rid, 1, k == n, due))
                if k < n:
                    heapq.heappush(self._due, (due + itl, next(self._seq), rid, k + 1, n))
            if events:
                self.loop.call_soon_threadsafe(self._deliver, events)

    def _run(self) -> None:
        """The engine loop on StepPipeline's clocks: schedule and launch the next step, then hand on the one in
        flight once the launch is over and the GPU has finished it. Time is virtual while the engine is busy (each
        wait is measured from when the previous one was due, so wake-up jitter does not accumulate into the
        simulated throughput) and re-anchored to the real clock when the engine idles or falls behind by more
        than a stall (a GC pause)."""
        cfg = self.config
        lag = ArrivalLag(cfg.cost.scheduling_lag_steps)
        pipeline = StepPipeline()
        in_flight: tuple[list[TokenEvent], float] | None = None  # launched step: its tokens, when its GPU work ends
        t = time.perf_counter()
        while not self._stop.is_set():
            lag.boundary(self.scheduler)
            while self._inbox:
                op, arg = self._inbox.popleft()
                if op == "add":
                    lag.arrive(self.scheduler, arg)  # type: ignore[arg-type]
                else:
                    self.scheduler.abort(arg)  # type: ignore[arg-type]
                    lag.drop(arg)  # type: ignore[arg-type]
            if in_flight is None and not self.scheduler.has_work:
                if lag.waiting:
                    continue
                self._wake.wait(0.05)
                self._wake.clear()
                t = time.perf_counter()
                continue
            if time.perf_counter() - t > STALL_S:
                t = time.perf_counter()
            launched_at, launched = t, None
            if self.scheduler.has_work:
                plan = self.scheduler.schedule()
                launched_at, gpu_done = pipeline.launch(t, cfg.step_cost([s.work() for s in plan]))
                # the scheduler's state moves on at once, as vLLM's does with placeholders for tokens in flight
                launched = (self.scheduler.complete(plan), gpu_done)
            t = max(launched_at, in_flight[1]) if in_flight is not None else launched_at
            remaining = t - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)
            if in_flight is not None and in_flight[0]:
                self.loop.call_soon_threadsafe(self._step_done, in_flight[0], t)
            in_flight = launched


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


def build_config(model: str, gpu: str, tp: int, profile: str | None = None, **kwargs) -> SimConfig:
    """Resolve catalog names and check the model fits; raises BackendError/CatalogError for user mistakes."""
    config = SimConfig(model=get_model(model), gpu=get_gpu(gpu), tp=tp,
                       profile=Profile.load(profile) if profile else None, **kwargs)
    if tp < 1:
        raise BackendError(f"--gpus must be at least 1, got {tp}")
    try:
        plan = memory_plan(config.model, config.gpu, tp, config.gpu_memory_utilization)
    except ValueError as exc:
        raise BackendError(str(exc)) from None
    if plan.kv_capacity_tokens < config.model.max_context:
        raise BackendError(
            f"{config.model.name} on {tp}x {config.gpu.key} leaves KV-cache room for {plan.kv_capacity_tokens} "
            f"tokens, less than one {config.model.max_context}-token sequence; use more GPUs or a larger GPU"
        )
    return config


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="7b", help="catalog model name or alias (default: 7b)")
    parser.add_argument("--gpu", default="h100", help="catalog GPU name or alias (default: h100)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs = tensor-parallel degree (default: 1)")
    parser.add_argument("--served-model-name", default=None, help="model id the API reports (default: catalog name)")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="max sequences per iteration (default: 256)")
    parser.add_argument("--max-batched-tokens", type=int, default=8192,
                        help="token budget per iteration, prefill chunks included (default: 8192)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                        help="fraction of GPU memory for weights + KV cache (default: 0.9)")
    parser.add_argument("--profile", default=None,
                        help="hardware profile JSON from `python -m training_bench micro profile`: step times from "
                             "measured operators instead of catalog peaks")
    parser.add_argument("--fixed-ttft", type=_seconds, default=None, metavar="DURATION",
                        help="no engine model: first token this long after arrival (e.g. 5ms), per request")
    parser.add_argument("--fixed-itl", type=_seconds, default=None, metavar="DURATION",
                        help="no engine model: one token every DURATION after the first (e.g. 1ms), per request")


def _seconds(text: str) -> float:
    """'5ms', '250us', '0.01s' or bare seconds (backends does not depend on loadgen's unit parser)."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration such as 1ms, 250us or 0.01s")
    value = float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0}[m.group(2)]
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def serve(config: SimConfig, host: str, port: int) -> None:
    """Run the sim server in the foreground until SIGINT/SIGTERM; prints one readiness line."""
    server = SimServer(config)
    for warning in config.warnings:
        print(f"sim: warning: {warning}", file=sys.stderr, flush=True)

    def started(bound: int) -> None:
        print(f"dissect sim (SIMULATED {config.model.name} on {config.tp}x {config.gpu.key}) "
              f"listening on http://{host}:{bound}", flush=True)
        gc.collect()
        gc.freeze()  # long-lived server state is never rescanned: no multi-ms collections mid-stream

    serve_until_stopped(server.app, host, port, started)


def _exit_when_orphaned() -> None:
    """Launched by loadgen: if loadgen dies without stopping us (SIGKILL), do not linger."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def launch_argv(model: str, gpu: str, gpus: int, host: str, port: int, profile: str | None = None) -> list[str]:
    """How loadgen starts the sim: a separate process, so its work never competes with the client's event loop."""
    extra = ["--profile", str(Path(profile).resolve())] if profile else []
    return [sys.executable, "-m", "backends.sim", "--model", model, "--gpu", gpu, "--gpus", str(gpus),
            "--host", host, "--port", str(port), "--exit-with-parent", *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backends.sim", description="Run the simulated engine server.")
    add_sim_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        _exit_when_orphaned()
    try:
        config = build_config(
            args.model, args.gpu, args.gpus, served_model_name=args.served_model_name,
            max_num_seqs=args.max_num_seqs, max_batched_tokens=args.max_batched_tokens,
            gpu_memory_utilization=args.gpu_memory_utilization, profile=args.profile,
            fixed_ttft_s=args.fixed_ttft, fixed_itl_s=args.fixed_itl,
        )
        serve(config, args.host, args.port)
    except (BackendError, CatalogError) as exc:
        print(f"sim: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sim: error: cannot listen on {args.host}:{args.port}: {exc.strerror}; choose another --port",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
