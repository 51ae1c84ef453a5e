"""Prompt text of an exact (with a tokenizer) or approximate (without) token count."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from loadgen.errors import LoadgenError

# Common English words that Llama-family tokenizers encode as one token each (with their leading space).
# Without a tokenizer, a prompt of N of these words approximates N tokens; the simulated engine counts
# exactly one token per word, and real servers' usage counts say how close the approximation came.
WORDS = tuple(
    """the of and to in is that for it as with was on be by at this are from or have an they which one
    you were her all she there would their we him been has when who will more no if out so said what up its
    about into than them can only other new some could time these two may then do first any my now such
    like our over man me even most made after also did many before must through back years where much your
    way well down should because each just those people how too little state good very make world still own
    see men work long get here between both life being under never day same another know while last might us
    great old year off come since against go came right used take three place""".split()
)

APPROXIMATION = "approximation: one common English word per token (no tokenizer given)"


class TextTokenizer(Protocol):
    def count(self, text: str) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


class HFTokenizer:
    """A `tokenizers` tokenizer.json (a file or a directory holding one), or a transformers tokenizer directory."""

    def __init__(self, path: str):
        p = Path(path)
        json_file = p / "tokenizer.json" if p.is_dir() else p
        if not p.exists():
            raise LoadgenError(f"--tokenizer {path}: no such file or directory")
        if json_file.is_file():
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise LoadgenError("--tokenizer needs the 'tokenizers' package: pip install tokenizers") from None
            try:
                tok = Tokenizer.from_file(str(json_file))
            except Exception as exc:  # the library raises a bare Exception for bad files
                raise LoadgenError(f"--tokenizer {path}: cannot load tokenizer.json ({exc})") from None
            self._encode = lambda text: tok.encode(text, add_special_tokens=False).ids
            self._decode = lambda ids: tok.decode(ids)
        else:
            try:
                from transformers import AutoTokenizer
            except ImportError:
                raise LoadgenError(f"--tokenizer {path}: no tokenizer.json there, and transformers is not installed") from None
            try:
                tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            except Exception as exc:
                raise LoadgenError(f"--tokenizer {path}: cannot load a tokenizer ({exc})") from None
            self._encode = lambda text: tok.encode(text, add_special_tokens=False)
            self._decode = lambda ids: tok.decode(ids)
        self.path = str(p)

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._decode(ids)

    def count(self, text: str) -> int:
        return len(self._encode(text))


class PromptSynthesizer:
    """Random prompts of a target length; deterministic for a given numpy Generator.

    With a tokenizer, prompts are made on the load path (a little ahead of their send), so their cost is time
    the event loop does not spend reading streams: words are chosen by their known token counts (a tokenizer
    that splits text at spaces before merging counts a space-separated text as the sum of its words), and one
    encode checks the result; re-tokenising until the count settles (about 2.5 ms a 512-token prompt, against
    about 0.7) is kept for tokenizers whose counts do not add up word by word."""

    # After this many prompts whose word sums missed, the tokenizer is taken not to add up and is not tried.
    ADDITIVE_MISSES = 3

    def __init__(self, tokenizer: TextTokenizer | None = None):
        self.tokenizer = tokenizer
        self._word_tokens: tuple[list[int], list[int], list[int], list[int]] | None = None
        self._misses = 0

    @property
    def source(self) -> str:
        if self.tokenizer is None:
            return APPROXIMATION
        return f"tokenizer: exact token counts with {getattr(self.tokenizer, 'path', 'the given tokenizer')}"

    def _words(self, rng: np.random.Generator, n: int) -> str:
        return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=n))

    def make(self, rng: np.random.Generator, tokens: int) -> tuple[str, int]:
        """(prompt, its token count). Exact with a tokenizer unless re-tokenisation never settles (then the
        count returned is the true one); with no tokenizer, the approximate count is the target."""
        tok = self.tokenizer
        if tok is None:
            return self._words(rng, tokens), tokens
        if self._misses < self.ADDITIVE_MISSES and tokens > 0:
            text = self._by_word_counts(rng, tokens)
            if text is not None and tok.count(text) == tokens:
                return text, tokens
            self._misses += 1
        text = self._words(rng, tokens)
        for _ in range(20):
            ids = tok.encode(text)
            if len(ids) == tokens:
                return text, tokens
            if len(ids) > tokens:
                text = tok.decode(ids[:tokens])
            else:
                text = text + " " + self._words(rng, tokens - len(ids))
        return text, tok.count(text)

    def _counts(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """Each word's token count first in the text and after a space, and the words of one token in each place."""
        if self._word_tokens is None:
            tok = self.tokenizer
            assert tok is not None
            first = [tok.count(w) for w in WORDS]
            rest = [tok.count(" " + w) for w in WORDS]
            self._word_tokens = (first, rest, [i for i, n in enumerate(first) if n == 1],
                                 [i for i, n in enumerate(rest) if n == 1])
        return self._word_tokens

    def _by_word_counts(self, rng: np.random.Generator, tokens: int) -> str | None:
        """Random words up to `tokens` by their counts, the rest filled with one-token words (None when the
        tokenizer has none)."""
        first, rest, first_ones, rest_ones = self._counts()
        picked: list[int] = []
        total = 0
        for i in rng.integers(0, len(WORDS), size=tokens).tolist():
            cost = rest[i] if picked else first[i]
            if cost < 1 or total + cost > tokens:
                break
            picked.append(i)
            total += cost
        while total < tokens:
            ones = rest_ones if picked else first_ones
            if not ones:
                return None
            picked.append(ones[int(rng.integers(0, len(ones)))])
            total += 1
        return " ".join(WORDS[i] for i in picked)
