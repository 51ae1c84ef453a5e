"""The closed loop's prompts are made before the clock starts, so synthesis never delays a send."""

import asyncio
import time

from backends.protocols.openai import OpenAIProtocol
from loadgen.client import Target
from loadgen.load import LoadPlan, run_load
from loadgen.workload.distributions import LengthDistribution
from loadgen.workload.specs import Workload


class StampedWorkload(Workload):
    """Records when each spec was made."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.made_ns: list[int] = []

    def specs(self, batch: int = 256):
        for spec in super().specs(batch):
            self.made_ns.append(time.perf_counter_ns())
            yield spec


def _workload() -> StampedWorkload:
    return StampedWorkload(LengthDistribution.parse("fixed:64"), LengthDistribution.parse("fixed:8"), 4096, seed=3)


def test_closed_loop_with_a_count_makes_every_prompt_before_the_clock(start_sim):
    sim = start_sim("--model", "7b", "--gpus", "1", "--fixed-ttft", "5ms", "--fixed-itl", "1ms")
    workload = _workload()
    plan = LoadPlan(concurrency=4, num_requests=20, warmup=2, timeout_s=30)
    outcome = asyncio.run(run_load(Target(sim.url, "llama-2-7b", OpenAIProtocol("completions")), workload, plan,
                                   lambda r: None))
    assert len(outcome.records) == 22 and all(r.ok for r in outcome.records)
    assert len(workload.made_ns) == 22
    assert max(workload.made_ns) < outcome.origin_ns


def test_closed_loop_with_a_duration_makes_two_per_user_ahead(start_sim):
    sim = start_sim("--model", "7b", "--gpus", "1", "--fixed-ttft", "5ms", "--fixed-itl", "1ms")
    workload = _workload()
    plan = LoadPlan(concurrency=3, duration_s=1.0, timeout_s=30)
    outcome = asyncio.run(run_load(Target(sim.url, "llama-2-7b", OpenAIProtocol("completions")), workload, plan,
                                   lambda r: None))
    before = sum(1 for t in workload.made_ns if t < outcome.origin_ns)
    assert before == 6
    assert len(outcome.records) > 6  # later ones were made as users took them
    assert [r.input_tokens for r in outcome.records] == [64] * len(outcome.records)


def test_single_turn_workload_makes_no_replies():
    """A reply is only ever a later turn's history: single-turn specs must not pay for one."""
    calls: list[int] = []
    workload = _workload()
    make = workload.synthesizer.make

    def counting_make(rng, tokens):
        calls.append(tokens)
        return make(rng, tokens)

    workload.synthesizer.make = counting_make
    workload.take(5)
    assert calls == [64] * 5
    two_turn = Workload(LengthDistribution.parse("fixed:64"), LengthDistribution.parse("fixed:8"), 4096, seed=3,
                        turns=2)
    calls.clear()
    two_turn.synthesizer.make = counting_make
    two_turn.take(1)
    assert calls == [64, 8, 64]  # turn 1, its reply (turn 2's history), turn 2; no reply after the last turn
