"""The span replay: the engine advanced over spans of identical decode steps from the batch's totals."""

from __future__ import annotations

import heapq
from collections import deque

from backends.sim.config import SimConfig
from backends.sim.replay_common import ReplayedRequest, _NotExact, _Workload
from backends.sim.roofline import memory_plan
from backends.sim.step_totals import _TotalsCost


class _SpanReplay:
    """ContinuousBatchScheduler's policy on a batch kept as totals. A running request that decodes (its K/V one
    token short of its sequence) is not stored step by step: with T the number of steps every decoder advanced,
    its generated count is g0 + T and its context P - 1 + g0 + T; the batch keeps how many decode, the sum of their
    P - 1 + g0, how many of them sit at each phase modulo the block size (those at phase -T need a new KV block
    this step) and a heap of the T at which each finishes. At most one running request is mid-prefill (a chunk cut
    by the token budget ends admission, so it is the last admitted) and it is held explicitly, as are waiting ones.
    """

    def __init__(self, config: SimConfig, totals: _TotalsCost, work: _Workload, concurrency: int | None):
        self.config, self.totals, self.work, self.concurrency = config, totals, work, concurrency
        n = work.num_requests
        self.P = [0] * n
        self.M = [0] * n
        for i in range(n):
            self.P[i], self.M[i] = work.length_of(i)
        self.gen = [0] * n  # explicit for waiting and mid-prefill requests; a decoder's is g0 + T
        self.kv = [0] * n  # likewise
        self.g0 = [0] * n
        self.version = [0] * n  # a finish-heap entry is stale once its request stopped decoding
        self.decoding = [False] * n
        self.first: list[float | None] = [None] * n
        self.scheduled_at: list[float | None] = [None] * n
        plan = memory_plan(config.model, config.gpu, config.tp, config.gpu_memory_utilization)
        self.B = config.block_size
        self.free = plan.kv_capacity_tokens // self.B
        self.running: list[int] = []
        self.waiting: deque[int] = deque()
        self.pending = -1  # the running request mid-prefill (always running[-1]), or -1
        self.T = 0
        self.n_dec = 0
        self.c_sum = 0  # sum over decoders of P - 1 + g0
        self.phase = [0] * self.B  # decoders by (P - 1 + g0) % B
        self.finishes: list[tuple[int, int, int]] = []  # (T after the step that finishes it, request, version)

    # -- the decoders' totals ------------------------------------------------------------------------
    def _add_decoder(self, i: int) -> None:
        g0 = self.gen[i] - self.T
        self.g0[i] = g0
        c = self.P[i] - 1 + g0
        self.decoding[i] = True
        self.n_dec += 1
        self.c_sum += c
        self.phase[c % self.B] += 1
        self.version[i] += 1
        heapq.heappush(self.finishes, (self.M[i] - g0, i, self.version[i]))

    def _drop_decoder(self, i: int) -> None:
        """Make decoder i explicit again (its gen and kv as of now)."""
        g0 = self.g0[i]
        c = self.P[i] - 1 + g0
        self.decoding[i] = False
        self.n_dec -= 1
        self.c_sum -= c
        self.phase[c % self.B] -= 1
        self.gen[i] = g0 + self.T
        self.kv[i] = c + self.T

    def _next_finish(self) -> int:
        f = self.finishes
        while f and (not self.decoding[f[0][1]] or self.version[f[0][1]] != f[0][2]):
            heapq.heappop(f)
        return f[0][0] if f else -1

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.B)

    # -- one step ------------------------------------------------------------------------------------
    def _step(self, now: float) -> tuple[tuple[float, float, float], int, list[int], list[int]]:
        """Schedule and complete one step: (its cost, tokens it emits, requests whose prefill it completes,
        requests it finishes, in the scheduler's order)."""
        cfg, B = self.config, self.B
        mbt = cfg.max_batched_tokens
        n_dec, T, pend = self.n_dec, self.T, self.pending
        if n_dec + (pend >= 0) > mbt or (pend >= 0 and self.running[-1] != pend):
            return self._step_by_sequence(now)
        cross = self.phase[-T % B]
        need = cross
        if pend >= 0:
            kvp = self.kv[pend]
            slp = self.P[pend] + self.gen[pend]
            npend = min(slp - kvp, mbt - n_dec)
            need += self._blocks(kvp + npend) - self._blocks(kvp)
        if need > self.free:
            return self._step_by_sequence(now)
        self.free -= need
        budget = mbt - n_dec
        nseq, n1, k1, emits = n_dec, n_dec, self.c_sum + n_dec * T + n_dec, n_dec
        chunks: list[tuple[int, int]] = []  # (request, new tokens) of the prefill chunks, in plan order
        if pend >= 0:
            chunks.append((pend, npend))
            budget -= npend
        running, waiting, P, gen = self.running, self.waiting, self.P, self.gen
        while waiting and budget > 0 and len(running) < cfg.max_num_seqs:
            i = waiting[0]
            n = min(P[i] + gen[i], budget)  # a waiting request has nothing cached
            blocks = self._blocks(n)
            if blocks > self.free:
                break  # first-come-first-served: the head waits for memory, nobody overtakes it
            waiting.popleft()
            self.free -= blocks
            running.append(i)
            self.kv[i] = 0
            chunks.append((i, n))
            budget -= n
            if self.scheduled_at[i] is None:
                self.scheduled_at[i] = now
        kv = self.kv
        more_n1, more_k1, more_emits, ptok, ppairs, pkv = _chunk_sums([(i, n, kv[i]) for i, n in chunks], P, gen)
        nseq, n1, k1, emits = nseq + len(chunks), n1 + more_n1, k1 + more_k1, emits + more_emits
        cost = self.totals.step(nseq, n1, k1, emits, ptok, ppairs, pkv)
        # complete: every decoder advanced one token
        self.T = T = T + 1
        finished: list[int] = []
        while self._next_finish() == T:
            finished.append(heapq.heappop(self.finishes)[1])
        if len(finished) > 1:
            finished.sort(key=running.index)
        for i in finished:
            self._drop_decoder(i)
            running.remove(i)
            self.free += self._blocks(self.kv[i])
        firsts: list[int] = []
        self.pending = -1
        for i, n in chunks:
            self.kv[i] += n
            if self.kv[i] == P[i] + gen[i]:
                gen[i] += 1
                firsts.append(i)
                if gen[i] >= self.M[i]:
                    finished.append(i)
                    running.remove(i)
                    self.free += self._blocks(self.kv[i])
                else:
                    self._add_decoder(i)
            else:
                self.pending = i
        return cost, emits, firsts, finished

    def _step_by_sequence(self, now: float) -> tuple[tuple[float, float, float], int, list[int], list[int]]:
        """ContinuousBatchScheduler.schedule and complete, line for line (a preemption, or more running requests
        than the token budget), each decoder's context read from the totals: only the requests preempted or left
        unscheduled change how they are held."""
        cfg, blocks_for = self.config, self._blocks
        P, M, gen, kv, running, waiting = self.P, self.M, self.gen, self.kv, self.running, self.waiting
        decoding, g0, T = self.decoding, self.g0, self.T
        budget = cfg.max_batched_tokens
        n_dec = k1 = 0  # decoders planned, their contexts + 1 summed
        chunks: list[tuple[int, int, int]] = []  # (request, new tokens, context) of everyone else planned
        k = 0
        while k < len(running) and budget > 0:
            i = running[k]
            if decoding[i]:
                ctx, n = P[i] - 1 + g0[i] + T, 1
            else:
                ctx = kv[i]
                n = min(P[i] + gen[i] - ctx, budget)
            extra = blocks_for(ctx + n) - blocks_for(ctx)
            if extra > self.free:
                # preempt from the back (most recent) until this request's blocks fit, or it is itself preempted
                victim = -1
                while extra > self.free and victim != i:
                    victim = running.pop()
                    if decoding[victim]:
                        self._drop_decoder(victim)
                    self.free += blocks_for(kv[victim])
                    kv[victim] = 0  # recompute: prompt and generated tokens are prefilled again on resumption
                    waiting.appendleft(victim)
                if victim == i:
                    break
            self.free -= extra
            if decoding[i]:
                n_dec += 1
                k1 += ctx + 1
            else:
                chunks.append((i, n, ctx))
            budget -= n
            k += 1
        unscheduled = [i for i in running[k:] if decoding[i]]  # the budget ran out before them: they wait a step
        for i in unscheduled:
            self._drop_decoder(i)
        while waiting and budget > 0 and len(running) < cfg.max_num_seqs:
            i = waiting[0]
            n = min(P[i] + gen[i] - kv[i], budget)
            extra = blocks_for(kv[i] + n)
            if extra > self.free:
                break
            waiting.popleft()
            self.free -= extra
            running.append(i)
            chunks.append((i, n, kv[i]))
            budget -= n
            if self.scheduled_at[i] is None:
                self.scheduled_at[i] = now
        nseq, n1, emits = n_dec + len(chunks), n_dec, n_dec
        more_n1, more_k1, more_emits, ptok, ppairs, pkv = _chunk_sums(chunks, P, gen)
        n1, k1, emits = n1 + more_n1, k1 + more_k1, emits + more_emits
        cost = self.totals.step(nseq, n1, k1, emits, ptok, ppairs, pkv)
        self.T = T = T + 1
        for i in unscheduled:
            self._add_decoder(i)
        finished: list[int] = []
        while self._next_finish() == T:
            i = heapq.heappop(self.finishes)[1]
            self._drop_decoder(i)
            finished.append(i)
        firsts: list[int] = []
        self.pending = -1
        for i, n, ctx in chunks:
            kv[i] = ctx + n
            if kv[i] == P[i] + gen[i]:
                gen[i] += 1
                firsts.append(i)
                if gen[i] >= M[i]:
                    finished.append(i)
                else:
                    self._add_decoder(i)
            elif self.pending >= 0:
                raise _NotExact  # two requests mid-prefill: the totals' invariant does not hold
            else:
                self.pending = i
        if len(finished) > 1:
            finished.sort(key=running.index)  # the plan's order
        for i in finished:
            running.remove(i)
            self.free += blocks_for(kv[i])
        if self.pending >= 0 and running[-1] != self.pending:
            raise _NotExact
        return cost, emits, firsts, finished

    # -- the engine loop -----------------------------------------------------------------------------
    def run(self) -> list[ReplayedRequest]:
        """replay_stepwise's loop on these totals, with spans of plain decode steps in an inner loop."""
        cfg, work, totals = self.config, self.work, self.totals
        cost = cfg.cost
        token_s, overhead = cost.frontend_token_s, cost.request_overhead_s
        num_requests, arrivals, sent = work.num_requests, work.arrivals, work.sent
        P, M, first, scheduled_at = self.P, self.M, self.first, self.scheduled_at
        running, waiting, phase, B = self.running, self.waiting, self.phase, self.B
        held: list[list[int]] = [[] for _ in range(cost.scheduling_lag_steps)]
        at_engine: list[tuple[float, int]] = []
        heappush, heappop = heapq.heappush, heapq.heappop
        front_free = 0.0  # FrontEnd.free_at
        gpu_free = 0.0  # StepPipeline.gpu_free
        next_index = len(sent)
        done: list[ReplayedRequest] = []
        # the launched step: tokens, first-token and finished requests, when its GPU work ends
        in_flight: tuple[int, list[int], list[int], float] | None = None
        now = 0.0
        mbt, max_seqs = cfg.max_batched_tokens, cfg.max_num_seqs
        layers = totals.layers
        while len(done) < num_requests:
            while arrivals and arrivals[0][0] <= now:
                t, i = heappop(arrivals)
                front_free = max(front_free, t)
                heappush(at_engine, (front_free + overhead, i))
            if held:
                waiting.extend(held.pop(0))
                held.append([])
            while at_engine and at_engine[0][0] <= now:
                _, i = heappop(at_engine)
                if held and (running or waiting):
                    held[-1].append(i)
                else:
                    waiting.append(i)
            has_work = bool(running or waiting)
            if in_flight is None and not has_work:
                if any(held):
                    continue
                now = max(now, min(x[0][0] for x in (at_engine, arrivals) if x))
                continue
            n = self.n_dec
            if (in_flight is not None and not in_flight[1] and not in_flight[2] and self.pending < 0 and n > 0
                    and n <= mbt and not any(held) and self._next_finish() != self.T + 1
                    and phase[-self.T % B] <= self.free
                    and (not waiting or n == mbt or len(running) >= max_seqs
                         or self._blocks(min(P[waiting[0]] + self.gen[waiting[0]], mbt - n))
                         > self.free - phase[-self.T % B])):
                # a span of plain decode steps: the same n sequences, each one token longer a step, until an
                # arrival reaches the engine, a decoder is about to finish or the KV cache runs short
                launch, layered = totals.launch(n, n, False)
                seconds_of = totals.decode_seconds(n)
                T, free, c_sum = self.T, self.free, self.c_sum
                prev_done = in_flight[3]
                prev_tokens = in_flight[0]
                next_finish = self._next_finish()
                while True:
                    cross = phase[-T % B]
                    free -= cross
                    seconds = seconds_of(c_sum + n * T + n)
                    launched_at = now + launch
                    start = gpu_free if gpu_free >= now else now
                    end = start + seconds
                    tail_end = launched_at + (seconds / layers if layered else 0.0)
                    gpu_free = end if end >= tail_end else tail_end
                    T += 1
                    now = launched_at if launched_at >= prev_done else prev_done
                    while arrivals and arrivals[0][0] <= now:
                        t, i = heappop(arrivals)
                        front_free = max(front_free, t)
                        heappush(at_engine, (front_free + overhead, i))
                    front_free = (front_free if front_free >= now else now) + prev_tokens * token_s
                    prev_done, prev_tokens = gpu_free, n
                    if (at_engine and at_engine[0][0] <= now) or next_finish == T + 1 or phase[-T % B] > free:
                        break
                self.T, self.free = T, free
                in_flight = (n, [], [], prev_done)
                continue
            launched_at, launched = now, None
            if has_work:
                (launch, seconds, tail), tokens, firsts, finished = self._step(now)
                # StepPipeline.launch
                launched_at = now + launch
                start = max(gpu_free, now)
                gpu_free = max(start + seconds, launched_at + tail)
                launched = (tokens, firsts, finished, gpu_free)
            if in_flight is None:
                now = launched_at
            else:
                now = max(launched_at, in_flight[3])
                while arrivals and arrivals[0][0] <= now:
                    t, i = heappop(arrivals)
                    front_free = max(front_free, t)
                    heappush(at_engine, (front_free + overhead, i))
                front_free = max(front_free, now) + in_flight[0] * token_s
                shown = front_free
                for i in in_flight[1]:
                    if first[i] is None:
                        first[i] = shown
                for i in in_flight[2]:
                    s = sent[i]
                    done.append(ReplayedRequest(s, first[i] - s, shown - s, M[i], scheduled_at[i] - s, P[i]))
                    if self.concurrency is not None and next_index < num_requests:
                        sent[next_index] = shown
                        heappush(arrivals, (shown, next_index))
                        next_index += 1
            in_flight = launched
        return done


def _chunk_sums(chunks: list[tuple[int, int, int]], P: list[int], gen: list[int]) -> tuple[int, ...]:
    """What the scheduled chunks (request, new tokens, tokens already cached) add to a step's totals: one-token
    chunks, their attention pairs, chunks that emit a token, and the prefill tokens, pairs and KV tokens of the rest.
    Whole numbers only, so the sums are exact in any order."""
    n1 = k1 = emits = ptok = ppairs = pkv = 0
    for i, n, ctx in chunks:
        if n == 1:
            n1 += 1
            k1 += ctx + 1
        else:
            ptok += n
            ppairs += n * ctx + n * (n + 1) // 2
            pkv += ctx + n
        if ctx + n == P[i] + gen[i]:
            emits += 1
    return n1, k1, emits, ptok, ppairs, pkv
