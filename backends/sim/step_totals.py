"""A step's cost from a batch's totals, bit for bit the cost model's (see _TotalsCost)."""

from __future__ import annotations

from dataclasses import replace

from backends.sim.config import SimConfig
from backends.sim.replay_common import _EXACT_INTEGERS, _NotExact
from backends.sim.roofline import SeqWork


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
