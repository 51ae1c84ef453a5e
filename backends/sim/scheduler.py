"""Continuous batching with iteration-level scheduling, chunked prefill and a paged KV cache.

Modelled on vLLM's V1 scheduler: running requests are served first (decodes, then unfinished prefill
chunks), then waiting requests are admitted first-come-first-served while the per-iteration token budget,
the sequence limit and free KV blocks allow. When a running request needs a block and none is free,
the most recently admitted request is preempted and later recomputed. The scheduler has no clock: the
engine asks it for a plan, charges the plan's cost, then tells it the plan completed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from backends.sim.roofline import SeqWork


@dataclass
class SimRequest:
    rid: str
    prompt_tokens: int
    max_tokens: int
    kv_len: int = 0  # tokens whose K/V are in the cache
    generated: int = 0
    blocks: int = 0
    preemptions: int = 0
    admitted_step: int | None = None  # iteration at which it first entered the running set
    received_s: float | None = None  # perf_counter when the server received it (the fixed timing counts from it)

    @property
    def seq_len(self) -> int:
        return self.prompt_tokens + self.generated

    @property
    def finished(self) -> bool:
        return self.generated >= self.max_tokens


@dataclass(frozen=True)
class Scheduled:
    request: SimRequest
    new_tokens: int
    context: int

    @property
    def emits_token(self) -> bool:
        return self.context + self.new_tokens == self.request.seq_len

    def work(self) -> SeqWork:
        return SeqWork(self.new_tokens, self.context, self.emits_token)


@dataclass(frozen=True)
class TokenEvent:
    rid: str
    tokens: int
    finished: bool
    due_s: float | None = None  # fixed timing: when the schedule made it due (perf_counter)


@dataclass
class ContinuousBatchScheduler:
    kv_capacity_tokens: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    waiting: deque[SimRequest] = field(default_factory=deque)
    running: list[SimRequest] = field(default_factory=list)
    step: int = 0
    preemptions: int = 0

    def __post_init__(self) -> None:
        self.total_blocks = self.kv_capacity_tokens // self.block_size
        self.free_blocks = self.total_blocks

    # -- queue management -------------------------------------------------------------------------
    def fits(self, prompt_tokens: int, max_tokens: int) -> bool:
        """Whether a request could ever complete alone in the cache."""
        return self._blocks_for(prompt_tokens + max_tokens) <= self.total_blocks

    def add(self, request: SimRequest) -> None:
        self.waiting.append(request)

    def abort(self, rid: str) -> bool:
        for req in self.running:
            if req.rid == rid:
                self.running.remove(req)
                self._free(req)
                return True
        for req in self.waiting:
            if req.rid == rid:
                self.waiting.remove(req)
                return True
        return False

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def kv_usage(self) -> float:
        return 1.0 - self.free_blocks / self.total_blocks if self.total_blocks else 0.0

    # -- one iteration ----------------------------------------------------------------------------
    def schedule(self) -> list[Scheduled]:
        budget = self.max_batched_tokens
        plan: list[Scheduled] = []
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.seq_len - req.kv_len, budget)
            if not self._reserve(req, n):
                # Preempt from the back (most recent) until this request's blocks fit, or it is itself preempted.
                while not self._reserve(req, n):
                    victim = self.running[-1]
                    self._preempt(victim)
                    if victim is req:
                        break
                if req not in self.running:
                    break
            plan.append(Scheduled(req, n, req.kv_len))
            budget -= n
            i += 1
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            n = min(req.seq_len - req.kv_len, budget)
            if not self._reserve(req, n):
                break  # first-come-first-served: the head waits for memory, nobody overtakes it
            self.waiting.popleft()
            if req.admitted_step is None:
                req.admitted_step = self.step
            self.running.append(req)
            plan.append(Scheduled(req, n, req.kv_len))
            budget -= n
        return plan

    def complete(self, plan: list[Scheduled]) -> list[TokenEvent]:
        self.step += 1
        events: list[TokenEvent] = []
        for item in plan:
            req = item.request
            if req not in self.running:  # aborted while the iteration ran
                continue
            req.kv_len += item.new_tokens
            if req.kv_len == req.seq_len:
                req.generated += 1
                done = req.finished
                events.append(TokenEvent(req.rid, 1, done))
                if done:
                    self.running.remove(req)
                    self._free(req)
        return events

    # -- KV blocks --------------------------------------------------------------------------------
    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _reserve(self, req: SimRequest, new_tokens: int) -> bool:
        extra = self._blocks_for(req.kv_len + new_tokens) - req.blocks
        if extra > self.free_blocks:
            return False
        if extra > 0:
            self.free_blocks -= extra
            req.blocks += extra
        return True

    def _free(self, req: SimRequest) -> None:
        self.free_blocks += req.blocks
        req.blocks = 0

    def _preempt(self, req: SimRequest) -> None:
        self.running.remove(req)
        self._free(req)
        req.kv_len = 0  # recompute: prompt and generated tokens are prefilled again on resumption
        req.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(req)
