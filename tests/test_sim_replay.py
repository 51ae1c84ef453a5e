"""The span replay against the step-by-step reference, request for request.

`replay` computes each step's cost from the batch's totals with the same floating-point operations as
`SimConfig.step_cost` and runs the same clocks, so the two agree exactly (==, not approximately): any
difference, even in the last bit, means the span replay departed from the reference's semantics somewhere.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import backends.sim.replay as sim_replay
from backends.sim.config import build_config
from backends.sim.replay import _TotalsCost, replay, replay_stepwise
from backends.sim.roofline import SeqWork

PROFILE = "results/h100-profile-7b.json"


def _config(model: str = "7b", gpu: str = "h100", tp: int = 1, profile: str | None = None, cost: dict | None = None,
            **fields):
    """A catalog config with `fields` and `cost` parameters replaced after build_config's checks (which refuse a
    cache smaller than one full-context sequence: the KV-pressure points want exactly that)."""
    cfg = replace(build_config(model, gpu, tp, profile=profile), **fields)
    return replace(cfg, cost=replace(cfg.cost, **cost)) if cost else cfg


MIXED = [(64, 4), (1024, 90), (256, 2), (3000, 30), (17, 1), (512, 200)]

# (id, config, replay arguments): each point a few hundred requests, so the reference runs in well under a second
POINTS = [
    ("poisson-4", {}, dict(input_len=512, output_len=128, num_requests=300, qps=4.0, seed=1)),
    ("poisson-16", {}, dict(input_len=512, output_len=128, num_requests=300, qps=16.0)),
    ("poisson-32-saturated", {}, dict(input_len=512, output_len=128, num_requests=300, qps=32.0, seed=2)),
    ("closed-64", {}, dict(input_len=512, output_len=128, num_requests=300, concurrency=64)),
    ("closed-256-large-batch", {}, dict(input_len=128, output_len=64, num_requests=400, concurrency=256)),
    ("mixed-lengths", {}, dict(input_len=0, output_len=0, num_requests=300, qps=12.0, seed=3, lengths=MIXED)),
    ("mixed-closed", {}, dict(input_len=0, output_len=0, num_requests=200, concurrency=16, lengths=MIXED)),
    ("send-times-burst-preempts", {}, dict(input_len=512, output_len=128, num_requests=0,
                                           send_times=[0.01 * k for k in range(200)])),
    ("max-seqs-1", dict(max_num_seqs=1), dict(input_len=512, output_len=32, num_requests=100, qps=8.0)),
    ("max-seqs-8", dict(max_num_seqs=8), dict(input_len=512, output_len=128, num_requests=300, qps=16.0, seed=4)),
    ("chunked-prefill", dict(max_batched_tokens=2048), dict(input_len=0, output_len=0, num_requests=200, qps=6.0,
                                                            lengths=[(5000, 20), (100, 50), (2047, 3)])),
    ("chunk-at-the-graph-edge", dict(max_batched_tokens=512), dict(input_len=700, output_len=40, num_requests=200,
                                                                   qps=10.0, seed=5)),
    ("tiny-token-budget", dict(max_batched_tokens=16, max_num_seqs=64),
     dict(input_len=100, output_len=60, num_requests=200, qps=30.0, seed=6)),
    ("kv-pressure-preempts", dict(gpu_memory_utilization=0.2), dict(input_len=512, output_len=128, num_requests=300,
                                                                    qps=32.0, seed=7)),
    ("kv-pressure-mixed", dict(gpu_memory_utilization=0.22), dict(input_len=0, output_len=0, num_requests=300,
                                                                 qps=24.0, seed=8, lengths=MIXED)),
    ("small-gpu-closed", dict(gpu="rtx4090"), dict(input_len=0, output_len=0, num_requests=200, concurrency=48,
                                                   lengths=[(1500, 400), (300, 700)])),
    ("70b-tp4", dict(model="70b", tp=4), dict(input_len=512, output_len=128, num_requests=200, qps=4.0, seed=9)),
    ("8b-gqa-h200", dict(model="8b", gpu="h200"), dict(input_len=2048, output_len=256, num_requests=200, qps=8.0)),
    ("scheduling-lag-2", dict(cost=dict(scheduling_lag_steps=2)), dict(input_len=512, output_len=64,
                                                                       num_requests=300, qps=16.0, seed=10)),
    ("no-front-end-no-overhead", dict(cost=dict(frontend_token_s=0.0, request_overhead_s=0.0)),
     dict(input_len=512, output_len=16, num_requests=200, concurrency=8)),
    ("slow-front-end", dict(cost=dict(frontend_token_s=1e-3)), dict(input_len=256, output_len=64, num_requests=200,
                                                                    qps=20.0, seed=11)),
    ("profile", dict(profile=PROFILE), dict(input_len=512, output_len=128, num_requests=200, qps=16.0, seed=12)),
    ("profile-of-another-model", dict(model="13b", profile=PROFILE),
     dict(input_len=512, output_len=64, num_requests=200, qps=8.0, seed=13)),
]


@pytest.mark.parametrize("config_args, replay_args", [p[1:] for p in POINTS], ids=[p[0] for p in POINTS])
def test_span_replay_gives_the_stepwise_replay_request_for_request(monkeypatch, config_args, replay_args):
    cfg = _config(**config_args)
    reference = replay_stepwise(cfg, **replay_args)

    def no_fallback(*args, **kwargs):
        raise AssertionError("replay fell back to stepping: the span replay did not cover this point")

    monkeypatch.setattr(sim_replay, "replay_stepwise", no_fallback)
    fast = replay(cfg, **replay_args)
    assert len(fast) == len(reference) > 0
    for got, want in zip(fast, reference):  # the same requests, finishing in the same order, to the last bit
        assert got == want


def test_the_grid_reaches_preemption(monkeypatch):
    """The points above meant to preempt do reach the sequence-by-sequence path, so the comparison covers it."""
    calls = []
    original = sim_replay._SpanReplay._step_by_sequence

    def counted(self, now):
        calls.append(now)
        return original(self, now)

    monkeypatch.setattr(sim_replay._SpanReplay, "_step_by_sequence", counted)
    for name, config_args, replay_args in POINTS:
        if name in ("kv-pressure-preempts", "send-times-burst-preempts"):
            calls.clear()
            replay(_config(**config_args), **replay_args)
            assert calls, name


@pytest.mark.parametrize("config_args", [{}, dict(model="70b", tp=4), dict(model="8b", gpu="h200"),
                                         dict(profile=PROFILE), dict(model="13b", profile=PROFILE),
                                         dict(cost=dict(eager_layer_overhead_s=0.0, cuda_graph_max_tokens=1024))],
                         ids=["7b-h100", "70b-tp4", "8b-h200", "profile", "profile-other-model", "no-eager"])
def test_step_cost_from_totals_is_step_cost_bit_for_bit(config_args):
    cfg = _config(**config_args)
    totals = _TotalsCost.of(cfg)
    assert totals is not None
    rng = np.random.default_rng(0)
    for _ in range(300):
        decodes = [SeqWork(1, int(c), True) for c in rng.integers(1, 4000, rng.integers(0, 300))]
        chunks = [SeqWork(int(n), int(c), bool(rng.integers(2))) for n, c in
                  zip(rng.integers(1, 3000, rng.integers(0, 3)), rng.integers(0, 3000, 3))]
        work = decodes + chunks
        want = cfg.step_cost(work)
        pre = [w for w in work if w.new_tokens > 1]
        got = totals.step(len(work), sum(w.new_tokens == 1 for w in work),
                          sum(w.context + 1 for w in work if w.new_tokens == 1), sum(w.emits_token for w in work),
                          sum(w.new_tokens for w in pre),
                          sum(w.new_tokens * w.context + w.new_tokens * (w.new_tokens + 1) // 2 for w in pre),
                          sum(w.context + w.new_tokens for w in pre))
        assert got == (want.launch_s, want.seconds, want.tail_s)
        if not chunks and decodes:
            k1 = sum(w.context + 1 for w in decodes)
            assert totals.decode_seconds(len(decodes))(k1) == want.seconds


def test_a_cost_model_the_totals_do_not_reproduce_falls_back_to_stepping(monkeypatch):
    """A step cost that is not a function of the batch's totals (here: the longest context matters) fails the
    probes, and replay steps through the reference instead of predicting something else."""
    cfg = _config()

    class Skewed(type(cfg)):
        def step_cost(self, work):
            cost = super().step_cost(work)
            return replace(cost, overhead_s=cost.overhead_s + 1e-6 * max((w.context for w in work), default=0))

    skewed = Skewed(**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__})
    assert _TotalsCost.of(skewed) is None
    args = dict(input_len=512, output_len=32, num_requests=50, qps=16.0)
    assert replay(skewed, **args) == replay_stepwise(skewed, **args)
    assert replay(skewed, **args) != replay(cfg, **args)


def test_a_request_that_can_never_fit_the_cache_is_refused():
    cfg = _config(gpu="rtx4090")
    with pytest.raises(ValueError, match="KV cache"):
        replay(cfg, 0, 0, 10, qps=1.0, lengths=[(512, 16), (4000, 90_000)])
