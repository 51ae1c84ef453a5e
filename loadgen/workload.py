"""Request specs: what each request asks for (prompt, input and output token targets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from loadgen.distributions import LengthDistribution
from loadgen.prompts import PromptSynthesizer


@dataclass(frozen=True)
class RequestSpec:
    index: int
    prompt: str
    input_tokens: int
    output_tokens: int


@dataclass
class Workload:
    """An endless, seeded stream of RequestSpecs with lengths clipped to the model's context:
    output to context - 1, then input to context - output. `clipped` counts requests that were cut."""

    input_len: LengthDistribution
    output_len: LengthDistribution
    max_context: int
    synthesizer: PromptSynthesizer = field(default_factory=PromptSynthesizer)
    seed: int = 0
    clipped: int = 0

    def describe(self) -> dict:
        return {
            "input_len": str(self.input_len),
            "output_len": str(self.output_len),
            "max_context": self.max_context,
            "prompt_source": self.synthesizer.source,
            "seed": self.seed,
        }

    def specs(self, batch: int = 256) -> Iterator[RequestSpec]:
        length_rng = np.random.default_rng([self.seed, 1])
        prompt_rng = np.random.default_rng([self.seed, 2])
        index = 0
        while True:
            outs = self.output_len.sample(length_rng, batch, self.max_context - 1)
            ins = self.input_len.sample(length_rng, batch, self.max_context)
            for want_in, out in zip(ins.tolist(), outs.tolist()):
                n_in = min(want_in, self.max_context - out)
                self.clipped += n_in < want_in
                prompt, n_in = self.synthesizer.make(prompt_rng, n_in)
                yield RequestSpec(index, prompt, n_in, out)
                index += 1

    def take(self, n: int) -> list[RequestSpec]:
        it = self.specs()
        return [next(it) for _ in range(n)]
