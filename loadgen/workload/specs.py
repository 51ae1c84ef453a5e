"""Request specs: what each request asks for (prompt, input and output token targets, when, which conversation).

Two sources share one interface (`specs()`, `take(n)`, `describe()`): `Workload` synthesises prompts from
length distributions, optionally with shared system prompts and multi-turn history; `DatasetWorkload`
replays a dataset's prompts, conversations or trace.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from loadgen.errors import LoadgenError
from loadgen.workload.datasets import Dataset, DatasetRecord
from loadgen.workload.distributions import LengthDistribution
from loadgen.workload.prompts import PromptSynthesizer


@dataclass(frozen=True)
class RequestSpec:
    index: int
    prompt: str
    input_tokens: int
    output_tokens: int
    arrival_s: float | None = None  # trace replay: the send time from the dataset
    conversation: int | None = None
    turn: int = 0
    # The next turn of the same conversation: sent when this one completes, with the history in its prompt.
    next_turn: "RequestSpec | None" = None

    def chain(self) -> Iterator["RequestSpec"]:
        spec: RequestSpec | None = self
        while spec is not None:
            yield spec
            spec = spec.next_turn


def _link(turns: list[RequestSpec]) -> RequestSpec:
    """Build the next_turn chain back to front (specs are frozen)."""
    nxt: RequestSpec | None = None
    for spec in reversed(turns):
        nxt = RequestSpec(spec.index, spec.prompt, spec.input_tokens, spec.output_tokens, spec.arrival_s,
                          spec.conversation, spec.turn, nxt)
    assert nxt is not None
    return nxt


class _IndexCounter:
    def __init__(self) -> None:
        self._next = itertools.count()

    def __call__(self) -> int:
        return next(self._next)


def text_key(seed: int, stream: int, *parts: int) -> list[int]:
    """The seed sequence of a text stream: stream 0 is the seed's own text (as before streams existed)."""
    return [seed, *parts] if stream == 0 else [seed, *parts, stream]


@dataclass
class Workload:
    """An endless, seeded stream of synthetic RequestSpecs, lengths clipped to the model's context
    (output to context - 1, then input to context - output; `clipped` counts requests that were cut).

    prefix_groups/prefix_len: every prompt starts with one of N distinct system prompts of P tokens (what
    prefix caching exploits). turns > 1: each spec starts a conversation whose later turns resend the whole
    history (earlier user messages and assistant replies of the generated length) plus a new message.

    stream: which text a seed gives. The points of a sweep share the seed's lengths (each load level sees the
    same requests' sizes) but not its text: a server that caches prefixes would otherwise answer every point
    after the first from the cache (LightLLM did, on the H200: 457 prompts found whole in its cache).
    """

    input_len: LengthDistribution
    output_len: LengthDistribution
    max_context: int
    synthesizer: PromptSynthesizer = field(default_factory=PromptSynthesizer)
    seed: int = 0
    prefix_groups: int = 0
    prefix_len: int = 0
    turns: int = 1
    stream: int = 0
    clipped: int = 0

    def __post_init__(self) -> None:
        if (self.prefix_groups > 0) != (self.prefix_len > 0):
            raise LoadgenError("--prefix-groups and --prefix-len go together: give both (e.g. 8 and 512)")
        if self.prefix_len >= self.max_context - 1:
            raise LoadgenError(f"--prefix-len {self.prefix_len} leaves no room in a {self.max_context}-token context")
        if self.turns < 1:
            raise LoadgenError("--turns must be at least 1")

    @property
    def prompt_source(self) -> str:
        return self.synthesizer.source

    def describe(self) -> dict:
        out = {
            "source": "synthetic",
            "input_len": str(self.input_len),
            "output_len": str(self.output_len),
            "max_context": self.max_context,
            "prompt_source": self.synthesizer.source,
            "seed": self.seed,
            "clipped_requests": self.clipped,
        }
        if self.stream:
            out["prompt_stream"] = self.stream
        if self.prefix_groups:
            out.update(prefix_groups=self.prefix_groups, prefix_len=self.prefix_len)
        if self.turns > 1:
            out["turns"] = self.turns
        return out

    def specs(self, batch: int = 256) -> Iterator[RequestSpec]:
        length_rng = np.random.default_rng([self.seed, 1])
        prompt_rng = np.random.default_rng(text_key(self.seed, self.stream, 2))
        prefixes = [self.synthesizer.make(np.random.default_rng(text_key(self.seed, self.stream, 5, g)),
                                          self.prefix_len) for g in range(self.prefix_groups)]
        index = _IndexCounter()
        conversation = 0
        lengths = self._lengths(length_rng, batch)
        while True:
            first_in, first_out = next(lengths)
            group = prefixes[int(prompt_rng.integers(len(prefixes)))] if prefixes else None
            turns: list[RequestSpec] = []
            history, history_tokens = "", 0
            for turn in range(self.turns):
                n_in, n_out = (first_in, first_out) if turn == 0 else next(lengths)
                budget = self.max_context - history_tokens - n_out
                if group is not None and turn == 0:
                    budget -= group[1]
                if budget < 1:
                    break  # the conversation no longer fits the context: it ends here
                if n_in > budget:
                    self.clipped += 1
                    n_in = budget
                message, n_in = self.synthesizer.make(prompt_rng, n_in)
                if turn == 0 and group is not None:
                    history, history_tokens = group[0] + "\n", group[1]
                prompt = history + message
                turns.append(RequestSpec(index(), prompt, history_tokens + n_in, n_out,
                                         conversation=conversation if self.turns > 1 else None, turn=turn))
                if turn + 1 < self.turns:  # the reply is only ever read as the next turn's history
                    reply, n_reply = self.synthesizer.make(prompt_rng, n_out)
                    history, history_tokens = prompt + "\n" + reply + "\n", history_tokens + n_in + n_reply
            conversation += 1
            yield _link(turns)

    def _lengths(self, rng: np.random.Generator, batch: int) -> Iterator[tuple[int, int]]:
        reserve = self.prefix_len
        while True:
            outs = self.output_len.sample(rng, batch, self.max_context - 1 - reserve)
            ins = self.input_len.sample(rng, batch, self.max_context)
            for want_in, out in zip(ins.tolist(), outs.tolist()):
                n_in = min(want_in, self.max_context - out - reserve)
                if self.turns == 1 and n_in < want_in:
                    self.clipped += 1
                yield max(1, n_in), out

    def take(self, n: int) -> list[RequestSpec]:
        return list(itertools.islice(self.specs(), n))


@dataclass
class DatasetWorkload:
    """RequestSpecs from a dataset. Text datasets are sampled with the seed and reused from the start when
    more requests are asked for than the dataset holds (`reused` counts them); traces keep their order and
    timestamps, and end with the trace. multi_turn replays ShareGPT conversations turn by turn."""

    dataset: Dataset
    max_context: int
    synthesizer: PromptSynthesizer = field(default_factory=PromptSynthesizer)
    seed: int = 0
    multi_turn: bool = False
    sample_size: int | None = None
    stream: int = 0  # as Workload's: another order of the records, and other text for a trace's prompts
    reused: int = 0
    clipped: int = 0

    def __post_init__(self) -> None:
        self.dataset = self.dataset.filter(self.max_context)
        if not self.dataset.records:
            raise LoadgenError(
                f"no record of {self.dataset.path} fits a {self.max_context}-token context "
                f"({', '.join(f'{n} {why}' for why, n in self.dataset.skipped.items())})"
            )
        if self.multi_turn and self.dataset.format != "sharegpt":
            raise LoadgenError("--multi-turn needs a conversation dataset (ShareGPT or messages format)")

    @property
    def is_trace(self) -> bool:
        return self.dataset.format in ("azure", "burstgpt")

    @property
    def prompt_source(self) -> str:
        if self.is_trace:
            return self.synthesizer.source + "; lengths from the trace"
        return f"dataset text ({self.dataset.token_count})"

    def describe(self) -> dict:
        out = {"source": "dataset", **self.dataset.describe(), "max_context": self.max_context,
               "multi_turn": self.multi_turn, "seed": self.seed, "reused_records": self.reused,
               "prompt_source": self.prompt_source}
        if self.stream:
            out["prompt_stream"] = self.stream
        return out

    def arrivals(self) -> np.ndarray:
        """A trace's timestamps in the order `specs()` yields its requests: a replay's send times, known before
        any prompt is made."""
        if not self.is_trace:
            raise LoadgenError(f"{self.dataset.path} is a {self.dataset.format} dataset, not a trace: it has no timestamps")
        return np.array([r.timestamp_s or 0.0 for r in self.dataset.sample(self.sample_size, self.seed)])

    def specs(self) -> Iterator[RequestSpec]:
        records = self.dataset.sample(self.sample_size, self.seed, self.stream)
        prompt_rng = np.random.default_rng(text_key(self.seed, self.stream, 2))
        index = _IndexCounter()
        conversation = 0
        for round_ in itertools.count():
            for record in records:
                if round_ > 0:
                    self.reused += 1
                yield self._spec(record, index, conversation, prompt_rng)
                conversation += 1
            if self.is_trace:
                return

    def _spec(self, record: DatasetRecord, index, conversation: int, rng) -> RequestSpec:
        if record.prompt is None:  # trace: lengths only
            prompt, n_in = self.synthesizer.make(rng, record.input_tokens)
            return RequestSpec(index(), prompt, n_in, record.output_tokens, arrival_s=record.timestamp_s)
        if not self.multi_turn or len(record.turns) < 2:
            return RequestSpec(index(), record.prompt, record.input_tokens, record.output_tokens)
        turns: list[RequestSpec] = []
        history, history_tokens = "", 0
        for k, t in enumerate(record.turns):
            if history_tokens + t.user_tokens + t.assistant_tokens > self.max_context:
                break
            prompt = history + t.user
            turns.append(RequestSpec(index(), prompt, history_tokens + t.user_tokens, t.assistant_tokens,
                                     conversation=conversation, turn=k))
            history = prompt + "\n" + t.assistant + "\n"
            history_tokens += t.user_tokens + t.assistant_tokens
        return _link(turns)

    def take(self, n: int) -> list[RequestSpec]:
        return list(itertools.islice(self.specs(), n))
