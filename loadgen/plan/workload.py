"""The workload a plan is made for: request lengths drawn once (from distributions, a scenario or a dataset) and an
arrival process, so that every configuration of a search meets the same requests (common random numbers: two
configurations differ by their engines, not by their luck in the draw)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadgen.errors import LoadgenError
from loadgen.load.arrivals import ArrivalProcess
from loadgen.workload.datasets import load_dataset
from loadgen.workload.distributions import LengthDistribution
from scenarios.scenario import Scenario, find_data_file


@dataclass(frozen=True)
class PlanWorkload:
    """`lengths`: (input, output) tokens per request in send order; a point of n requests takes the first n (and
    cycles when n exceeds them). `burstiness`: the gamma shape of inter-arrival times (1 is Poisson)."""

    description: str
    lengths: tuple[tuple[int, int], ...]
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        if not self.lengths:
            raise LoadgenError("the workload has no requests; give --input-len/--output-len, a scenario or a dataset")

    @property
    def mean_input(self) -> float:
        return float(np.mean([i for i, _ in self.lengths]))

    @property
    def mean_output(self) -> float:
        return float(np.mean([o for _, o in self.lengths]))

    @property
    def longest(self) -> int:
        """The most tokens one request holds in the KV cache (prompt plus every output token)."""
        return max(i + o for i, o in self.lengths)

    def take(self, n: int) -> list[tuple[int, int]]:
        return [self.lengths[k % len(self.lengths)] for k in range(n)]

    def send_times(self, rate: float, n: int, seed: int) -> list[float]:
        """n open-loop send times at `rate` req/s, the same draw for every configuration at that rate."""
        kind = "poisson" if self.burstiness == 1.0 else "gamma"
        return ArrivalProcess(kind, rate, self.burstiness).offsets(np.random.default_rng([seed, 7]), n).tolist()


def from_distributions(input_len: str, output_len: str, n: int, seed: int, max_context: int,
                       burstiness: float = 1.0, what: str = "") -> PlanWorkload:
    """Lengths drawn as loadgen draws them: outputs first, inputs clipped to what the context leaves."""
    ins_d = LengthDistribution.parse(str(input_len), "--input-len")
    outs_d = LengthDistribution.parse(str(output_len), "--output-len")
    rng = np.random.default_rng(seed)
    outs = outs_d.sample(rng, n, max_context - 1)
    ins = ins_d.sample(rng, n, max_context)
    lengths = tuple((max(1, min(int(i), max_context - int(o))), int(o)) for i, o in zip(ins, outs))
    return PlanWorkload(f"{what}input {ins_d}, output {outs_d} tokens", lengths, burstiness)


def from_dataset(path: str, n: int, seed: int, max_context: int, burstiness: float = 1.0) -> PlanWorkload:
    """A dataset's or trace's (input, output) lengths (its timestamps are not used: the plan searches the rate)."""
    data = load_dataset(find_data_file(path)).filter(max_context)
    records = data.sample(None, seed)
    if not records:
        raise LoadgenError(f"dataset {path}: no record fits the model's {max_context}-token context")
    lengths = tuple((r.input_tokens, r.output_tokens) for r in records)
    lengths = tuple(lengths[k % len(lengths)] for k in range(max(n, len(lengths))))
    return PlanWorkload(f"dataset {path} ({data.format}, {len(records)} records, lengths by {data.token_count})",
                        lengths, burstiness)


def from_scenario(scenario: Scenario, n: int, seed: int, max_context: int,
                  input_len: str | None = None, output_len: str | None = None) -> PlanWorkload:
    """A scenario's lengths or dataset and its arrival burstiness; --input-len/--output-len override its lengths."""
    work, arrival = scenario.section("workload"), scenario.section("arrival")
    kind = arrival.get("kind", "poisson")
    if kind not in ("poisson", "gamma"):
        raise LoadgenError(f"scenario {scenario.name}: arrival kind {kind!r} cannot be planned; the plan searches an "
                           "open-loop rate (poisson or gamma); give --input-len/--output-len without the scenario")
    burstiness = float(arrival.get("burstiness", 1.0)) if kind == "gamma" else 1.0
    if work.get("dataset") and input_len is None and output_len is None:
        w = from_dataset(str(scenario.resolve_path(work["dataset"])), n, seed, max_context, burstiness)
        return PlanWorkload(f"scenario {scenario.name}: {w.description}", w.lengths, burstiness)
    return from_distributions(input_len or work.get("input_len", 512), output_len or work.get("output_len", 128),
                              n, seed, max_context, burstiness, what=f"scenario {scenario.name}: ")
