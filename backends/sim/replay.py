"""The simulated engine replayed in virtual time: the same scheduler and step costs as the live sim, without HTTP
or sleeping, so a load point of thousands of requests is predicted in a fraction of a second. Used to fit and
check the sim against a measured engine (benchmarks/sim_validation.py) and to search configurations.

Two implementations of one semantics. `replay_stepwise` is the reference: one loop iteration per engine step,
through the live sim's own ContinuousBatchScheduler, StepPipeline, FrontEnd and ArrivalLag, every running
sequence touched every step. `replay` gives the same numbers (a test compares them per request on a grid of
points) without that per-sequence work: a decoding sequence's context grows by one token a step, so the batch is
kept as totals (how many decode, the sum of their contexts, how many cross a KV-block boundary at each phase, who
finishes at which step), a step's cost is computed from those totals with the same floating-point operations as
`SimConfig.step_cost`, and a span of identical decode-only steps between events (an arrival at the engine, a
finish, a prefill chunk, a preemption) runs in a tight loop of scalar arithmetic. A step where the totals do not
suffice (a preemption, a batch larger than the token budget) is done sequence by sequence, as the scheduler does.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from backends.sim.config import SimConfig
from backends.sim.pipeline import ArrivalLag, FrontEnd, StepPipeline
from backends.sim.roofline import SeqWork, memory_plan
from backends.sim.scheduler import ContinuousBatchScheduler, SimRequest, TokenEvent

# Products and sums of whole numbers are exact in binary64 below this: the step cost's attention FLOPs are such a
# sum in any order only while they stay under it.
_EXACT_INTEGERS = 2**53


@dataclass(frozen=True)
class ReplayedRequest:
    arrival_s: float
    ttft_s: float
    e2el_s: float
    output_tokens: int
    before_inference_s: float = 0.0  # sent until first scheduled (vLLM's e2e - inference, plus the client's hop)
    input_tokens: int = 0

    @property
    def tpot_s(self) -> float | None:
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else None


class _NotExact(Exception):
    """The totals cannot reproduce the step-by-step arithmetic here: replay falls back to replay_stepwise."""


@dataclass
class _Workload:
    """Who is sent when, drawn once so that both replays meet the same arrivals."""

    num_requests: int
    arrivals: list[tuple[float, int]]  # heap of (sent, index)
    sent: dict[int, float]
    lengths: list[tuple[int, int]] | None
    input_len: int
    output_len: int

    def length_of(self, i: int) -> tuple[int, int]:
        return self.lengths[i % len(self.lengths)] if self.lengths is not None else (self.input_len, self.output_len)


def _workload(config: SimConfig, input_len: int, output_len: int, num_requests: int, qps: float | None,
              concurrency: int | None, seed: int, send_times: list[float] | None,
              lengths: list[tuple[int, int]] | None) -> _Workload:
    if sum(x is not None for x in (qps, concurrency, send_times)) != 1:
        raise ValueError("give one of qps, concurrency, send_times")
    if lengths is not None and not lengths:
        raise ValueError("lengths, when given, needs at least one (input, output) pair")
    rng = np.random.default_rng(seed)
    arrivals: list[tuple[float, int]] = []
    sent: dict[int, float] = {}
    if send_times is not None:
        num_requests = len(send_times)
        for i, t in enumerate(sorted(send_times)):
            sent[i] = t
            heapq.heappush(arrivals, (t, i))
    elif qps is not None:
        t = 0.0
        for i in range(num_requests):
            t += rng.exponential(1.0 / qps)
            sent[i] = t
            heapq.heappush(arrivals, (t, i))
    else:
        for i in range(min(concurrency, num_requests)):
            sent[i] = 0.0
            heapq.heappush(arrivals, (0.0, i))
    work = _Workload(num_requests, arrivals, sent, lengths, input_len, output_len)
    # a request that can never fit the KV cache would wait at the head of the queue forever
    plan = memory_plan(config.model, config.gpu, config.tp, config.gpu_memory_utilization)
    blocks = plan.kv_capacity_tokens // config.block_size
    for p, m in (set(lengths) if lengths is not None else {(input_len, output_len)}):
        if num_requests and -(-(p + m) // config.block_size) > blocks:
            raise ValueError(f"a request of {p} + {m} tokens needs more than the {plan.kv_capacity_tokens} tokens of "
                             f"KV cache the engine has; shorten it or give the engine more memory")
    return work


class _TotalsCost:
    """`config.step_cost` from a batch's totals instead of its list of sequences. Every figure the cost model
    takes from a batch is a count or a sum of whole numbers (tokens, logits, sequences, attention key-query pairs,
    KV tokens touched), so with the same operations in the same order it is the same float, bit for bit. Built
    only where it checks out against config.step_cost on probe batches of every kind (decode graph, piecewise
    prefill, eager, one-token chunk); of() returns None otherwise and replay steps."""

    def __init__(self, config: SimConfig):
        m, params, gpu = config.model, config.cost, config.gpu
        self.profile = None
        if config.profile is not None:
            if config.profile.model == m.name:
                self.profile = config.profile
            else:  # another model's profile: its measured ceilings in the roofline
                params = replace(params, memory_efficiency=1.0, compute_efficiency=1.0)
                gpu = config.profile.ceiling_gpu(gpu)
        self.tp = tp = config.tp
        self.layers = m.num_layers
        self.flops_per_token = 2.0 * (m.num_layers * m.layer_params)
        self.flops_per_logit = 2.0 * m.vocab_size * m.hidden_size
        self.flops_per_pair = 4.0 * m.num_layers * m.num_heads * m.head_dim
        self.pairs_limit = _EXACT_INTEGERS // (4 * m.num_layers * m.num_heads * m.head_dim)
        self.compute_rate = tp * gpu.peak_flops * params.compute_efficiency
        self.weight_term = (m.matmul_params * params.dtype_bytes / tp) / params.memory_efficiency
        self.kv_bytes = m.kv_bytes_per_token(params.dtype_bytes)
        self.kv_eff = params.kv_memory_efficiency
        self.bandwidth = gpu.hbm_bandwidth
        self.overhead = params.step_overhead_s
        self.hidden_bytes = m.hidden_size * params.dtype_bytes
        self.allreduce_latency = params.allreduce_latency_s
        self.ring = 2 * (tp - 1) / tp
        self.interconnect = gpu.interconnect_bandwidth
        self.params = params
        self._comm: dict[int, float] = {}
        self._profile_layer: dict[int, float] = {}

    @classmethod
    def of(cls, config: SimConfig) -> "_TotalsCost | None":
        totals = cls(config)
        long = min(config.max_batched_tokens, 2 * totals.params.cuda_graph_max_tokens + 3)
        probes = [[SeqWork(1, 517, True)], [SeqWork(1, 700 + k, True) for k in range(40)],
                  [SeqWork(1, 900 + k, True) for k in range(totals.params.cuda_graph_max_tokens + 5)],
                  [SeqWork(512, 0, True)], [SeqWork(1, 600, True), SeqWork(300, 212, True)],
                  [SeqWork(1, 600, True), SeqWork(long, 0, False)], [SeqWork(1, 31, True), SeqWork(1, 99, False)],
                  [SeqWork(1, 40, True), SeqWork(7, 0, True), SeqWork(5, 0, False)]]
        for work in probes:
            want = config.step_cost(work)
            n1 = sum(1 for w in work if w.new_tokens == 1)
            k1 = sum(w.context + 1 for w in work if w.new_tokens == 1)
            pre = [w for w in work if w.new_tokens > 1]
            got = totals.step(len(work), n1, k1, sum(w.emits_token for w in work), sum(w.new_tokens for w in pre),
                              sum(w.new_tokens * w.context + w.new_tokens * (w.new_tokens + 1) // 2 for w in pre),
                              sum(w.context + w.new_tokens for w in pre))
            if got != (want.launch_s, want.seconds, want.tail_s):
                return None
        return totals

    def comm(self, tokens: int) -> float:
        """The roofline's all-reduce time (a function of the step's token count only)."""
        comm = self._comm.get(tokens)
        if comm is None:
            comm = 0.0
            if self.tp > 1:
                message = tokens * self.hidden_bytes
                per_allreduce = self.allreduce_latency + self.ring * message / self.interconnect
                comm = 2 * self.layers * per_allreduce
            self._comm[tokens] = comm
        return comm

    def launch(self, nseq: int, tokens: int, prefill: bool) -> tuple[float, bool]:
        """(CPU time to launch the step, whether it is launched layer by layer), as roofline.launch_seconds."""
        p = self.params
        if tokens > p.cuda_graph_max_tokens:
            per_seq, per_layer = p.launch_per_seq_s + p.eager_launch_per_seq_s, p.eager_layer_overhead_s
        elif prefill:
            per_seq, per_layer = p.launch_per_seq_s, p.piecewise_layer_s
        else:
            per_seq, per_layer = p.launch_per_seq_s, 0.0
        return p.launch_s + per_seq * nseq + self.layers * per_layer, per_layer > 0

    def gpu_seconds(self, tokens: int, logits: int, pairs: int, kv_touched: int, decode_kv: int,
                    prefill_pairs: int) -> float:
        """The GPU's time for a step: `pairs` and `kv_touched` over all sequences (the roofline's attention FLOPs
        and KV bytes); `decode_kv` over the one-token ones and `prefill_pairs` over the others (a profile's)."""
        if pairs > self.pairs_limit:
            raise _NotExact
        if self.profile is None:
            flops = self.flops_per_token * tokens + self.flops_per_logit * logits + self.flops_per_pair * pairs
            compute = flops / self.compute_rate
            memory = (self.weight_term + kv_touched * self.kv_bytes / self.tp / self.kv_eff) / self.bandwidth
            return max(compute, memory) + self.comm(tokens) + self.overhead
        t, tp = self.profile.tables, self.tp
        layer = self._profile_layer.get(tokens)
        if layer is None:
            from backends.sim.profile_cost import LAYER_OPS, SHARDED

            layer = sum(t[name](tokens) / (tp if name in SHARDED else 1) for name in LAYER_OPS)
            layer += t["rmsnorm"](tokens)
            self._profile_layer[tokens] = layer
        layer += (t["attention_prefill"](float(prefill_pairs)) + t["attention_decode"](decode_kv)) / tp
        compute = self.layers * layer + t["embedding"](tokens) + t["lm_head"](logits) / tp
        return max(compute, 0.0) + self.comm(tokens) + self.overhead

    def step(self, nseq: int, n1: int, k1: int, emits: int, ptok: int, ppairs: int, pkv: int
             ) -> tuple[float, float, float]:
        """(launch_s, seconds, tail_s) of a step of `nseq` sequences: `n1` of one new token whose contexts + 1 sum
        to `k1`, and prefill chunks of `ptok` tokens in all, `ppairs` causal key-query pairs, `pkv` KV tokens;
        `emits` of them produce a token."""
        tokens = n1 + ptok
        if tokens == 0:
            return 0.0, 0.0, 0.0
        seconds = self.gpu_seconds(tokens, emits, k1 + ppairs, k1 + pkv, k1, ppairs)
        launch, layered = self.launch(nseq, tokens, ptok > 0)
        return launch, seconds, seconds / self.layers if layered else 0.0

    def decode_seconds(self, n: int):
        """The GPU's time of a decode-only step of `n` sequences as a function of their contexts + 1 summed: the
        body of gpu_seconds with what is constant over a span of such steps taken out (the same operations)."""
        if self.profile is not None:
            return lambda k1: self.gpu_seconds(n, n, k1, k1, k1, 0)
        base = self.flops_per_token * n + self.flops_per_logit * n
        per_pair, rate, weight, kv_bytes, tp, kv_eff = (self.flops_per_pair, self.compute_rate, self.weight_term,
                                                        self.kv_bytes, self.tp, self.kv_eff)
        bandwidth, comm, overhead, limit = self.bandwidth, self.comm(n), self.overhead, self.pairs_limit

        def seconds(k1: int) -> float:
            if k1 > limit:
                raise _NotExact
            compute = (base + per_pair * k1) / rate
            memory = (weight + k1 * kv_bytes / tp / kv_eff) / bandwidth
            return max(compute, memory) + comm + overhead
        return seconds


def replay(config: SimConfig, input_len: int, output_len: int, num_requests: int, qps: float | None = None,
           concurrency: int | None = None, seed: int = 0,
           send_times: list[float] | None = None,
           lengths: list[tuple[int, int]] | None = None) -> list[ReplayedRequest]:
    """Poisson arrivals at `qps`, requests sent at `send_times` (a measured run's own schedule, so that the
    prediction meets the same arrivals as the measurement), or a closed loop of `concurrency` users that all start
    at once. Every request is `input_len` in / `output_len` out unless `lengths` gives (input, output) per request,
    in send order (a workload drawn from a distribution; request k takes lengths[k % len(lengths)]).

    The engine is the live sim's (see replay_stepwise for its clocks), advanced over spans of identical decode
    steps from the batch's totals; the result is replay_stepwise's, request for request."""
    args = (config, input_len, output_len, num_requests, qps, concurrency, seed, send_times, lengths)
    work = _workload(*args)
    totals = _TotalsCost.of(config)
    if totals is not None:
        try:
            return _SpanReplay(config, totals, work, concurrency).run()
        except _NotExact:
            pass
    return replay_stepwise(config, input_len, output_len, num_requests, qps, concurrency, seed, send_times, lengths)


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
        ptok = ppairs = pkv = 0
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
        for i, n in chunks:
            ctx = self.kv[i]
            nseq += 1
            if n == 1:
                n1 += 1
                k1 += ctx + 1
            else:
                ptok += n
                ppairs += n * ctx + n * (n + 1) // 2
                pkv += ctx + n
            if ctx + n == P[i] + gen[i]:
                emits += 1
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
        ptok = ppairs = pkv = 0
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


def replay_stepwise(config: SimConfig, input_len: int, output_len: int, num_requests: int,
                    qps: float | None = None, concurrency: int | None = None, seed: int = 0,
                    send_times: list[float] | None = None,
                    lengths: list[tuple[int, int]] | None = None) -> list[ReplayedRequest]:
    """replay's reference: the same arguments and results, one loop iteration per engine step through the live
    sim's own scheduler, every running sequence touched every step (about 2 ms a request; kept to check replay).

    As in the live sim: a request passes the front end and reaches the engine `request_overhead_s` later; the
    engine steps on StepPipeline's clocks (the next step is scheduled and launched while the GPU runs the one
    before; a step's tokens leave once the next is launched and its GPU work is done); a request is scheduled at
    the first step boundary after it arrived (`scheduling_lag_steps` later on a busy engine)."""
    work = _workload(config, input_len, output_len, num_requests, qps, concurrency, seed, send_times, lengths)
    num_requests, arrivals, sent, length_of = work.num_requests, work.arrivals, work.sent, work.length_of
    cost = config.cost
    plan = memory_plan(config.model, config.gpu, config.tp, config.gpu_memory_utilization)
    sched = ContinuousBatchScheduler(plan.kv_capacity_tokens, config.block_size, config.max_num_seqs,
                                     config.max_batched_tokens)
    frontend = FrontEnd(cost.frontend_token_s)
    at_engine: list[tuple[float, int]] = []  # (time it reaches the engine, index)
    lag = ArrivalLag(cost.scheduling_lag_steps)
    pipeline = StepPipeline()
    next_index = len(sent)
    first: dict[int, float] = {}
    scheduled_at: dict[int, float] = {}
    done: list[ReplayedRequest] = []
    in_flight: tuple[list[TokenEvent], float] | None = None  # launched step: its tokens, when its GPU work ends
    now = 0.0  # the engine's CPU clock: the next step boundary

    def intake(until: float) -> None:
        while arrivals and arrivals[0][0] <= until:
            t, i = heapq.heappop(arrivals)
            heapq.heappush(at_engine, (frontend.intake(t) + cost.request_overhead_s, i))

    while len(done) < num_requests:
        intake(now)
        lag.boundary(sched)
        while at_engine and at_engine[0][0] <= now:
            _, i = heapq.heappop(at_engine)
            lag.arrive(sched, SimRequest(str(i), *length_of(i)))
        if in_flight is None and not sched.has_work:
            if lag.waiting:
                continue
            now = max(now, min(x[0][0] for x in (at_engine, arrivals) if x))
            continue
        launched_at, launched = now, None
        if sched.has_work:
            step = sched.schedule()
            for s in step:
                scheduled_at.setdefault(int(s.request.rid), now)
            launched_at, gpu_done = pipeline.launch(now, config.step_cost([s.work() for s in step]))
            launched = (sched.complete(step), gpu_done)
        if in_flight is None:
            now = launched_at
        else:
            now = max(launched_at, in_flight[1])
            intake(now)  # arrivals meanwhile reach the front end before these tokens do
            shown = frontend.deliver(now, sum(e.tokens for e in in_flight[0]))
            for event in in_flight[0]:
                i = int(event.rid)
                first.setdefault(i, shown)
                if event.finished:
                    done.append(ReplayedRequest(sent[i], first[i] - sent[i], shown - sent[i], length_of(i)[1],
                                                scheduled_at[i] - sent[i], length_of(i)[0]))
                    if concurrency is not None and next_index < num_requests:
                        sent[next_index] = shown
                        heapq.heappush(arrivals, (shown, next_index))
                        next_index += 1
        in_flight = launched
    return done


def summarize_replay(done: list[ReplayedRequest]) -> dict:
    """Percentiles as loadgen's metrics take them (numpy's linear interpolation) and throughput over the window
    from the first send to the last finish, so a replay and a measured summary compare key for key."""
    ttft = np.array([r.ttft_s for r in done]) * 1e3
    tpot = np.array([r.tpot_s for r in done if r.tpot_s is not None]) * 1e3
    e2el = np.array([r.e2el_s for r in done]) * 1e3
    start = min(r.arrival_s for r in done)
    window = max(r.arrival_s + r.e2el_s for r in done) - start
    return {"ttft_p50_ms": float(np.median(ttft)), "ttft_p90_ms": float(np.percentile(ttft, 90)),
            "ttft_mean_ms": float(ttft.mean()),
            "before_inference_mean_ms": float(np.mean([r.before_inference_s for r in done]) * 1e3),
            "tpot_p50_ms": float(np.median(tpot)), "tpot_p90_ms": float(np.percentile(tpot, 90)),
            "e2el_p50_ms": float(np.median(e2el)),
            "output_tok_s": sum(r.output_tokens for r in done) / window,
            "requests_per_s": len(done) / window}
