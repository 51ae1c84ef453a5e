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
    """Random prompts of a target length; deterministic for a given numpy Generator."""

    def __init__(self, tokenizer: TextTokenizer | None = None):
        self.tokenizer = tokenizer

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
        text = self._words(rng, tokens)
        tok = self.tokenizer
        if tok is None:
            return text, tokens
        for _ in range(20):
            ids = tok.encode(text)
            if len(ids) == tokens:
                return text, tokens
            if len(ids) > tokens:
                text = tok.decode(ids[:tokens])
            else:
                text = text + " " + self._words(rng, tokens - len(ids))
        return text, tok.count(text)
