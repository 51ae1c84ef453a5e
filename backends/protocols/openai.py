"""OpenAI streaming protocol, client side: the request body, and the parser of its chunks (which tokens each
carries, the usage, the finish reason), on sse.EventParser's SSE handling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.protocols.sse import EventParser

ENDPOINT_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass(frozen=True)
class OpenAIProtocol:
    endpoint: str = "completions"  # or "chat"
    ignore_eos: bool = True
    # vLLM's stream_options.continuous_usage_stats: usage in every chunk, so a token whose text is empty (a partial
    # UTF-8 sequence, a special token) is still counted, and the first token is timed even when it prints nothing.
    continuous_usage: bool = False
    # Also force the length with min_tokens. Only for servers not known to honour ignore_eos: on vLLM it is not
    # free, its min-tokens logits processor does per-request Python work in every step (the H100 step trace showed
    # the engine's launches slower under loadgen's requests than under vLLM's own client's, which send no min_tokens).
    min_tokens: bool = True

    @property
    def path(self) -> str:
        return ENDPOINT_PATHS[self.endpoint]

    def path_for(self, model: str) -> str:
        return self.path

    def payload(self, model: str, prompt: str | list[int], output_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": output_tokens,
            "stream": True,
            "stream_options": ({"include_usage": True, "continuous_usage_stats": True} if self.continuous_usage
                               else {"include_usage": True}),
            "temperature": 0.0,
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
            if self.min_tokens:  # the portable way to force the length on servers that ignore ignore_eos
                body["min_tokens"] = output_tokens
        if self.endpoint == "chat":
            text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = prompt
        return body

    def parser(self, collect_text: bool = False) -> "OpenAIStreamParser":
        return OpenAIStreamParser(collect_text)


class OpenAIStreamParser(EventParser):
    """OpenAI completions/chat chunks: tokens in choices[].text or choices[].delta.content; usage at the end
    (or in every chunk with continuous usage stats, which then gives the exact tokens per chunk).

    Every chunk is parsed and checked (orjson: about as fast as the byte scan this replaced, which let a
    broken chunk after the first count as a token). A chunk with usage and choices carries the tokens that
    usage adds to those already counted: with continuous usage that is the chunk's own tokens (an empty-text
    token included); a final chunk with empty text and the whole count carries none, so it is not timed."""

    def event(self, chunk: dict) -> int:
        if self.response_id is None:
            self.response_id = chunk.get("id")
        usage = chunk.get("usage")
        choices = chunk.get("choices")
        if choices is None:
            choices = ()
        elif not isinstance(choices, list):
            raise TypeError("choices is not a list")
        carried = 0
        for choice in choices:
            text = choice.get("text")
            if text is None:
                delta = choice.get("delta")
                text = delta.get("content") if delta is not None else None
            if text:
                carried = 1
            self._text(text)
            finish = choice.get("finish_reason")
            if finish:
                self.finish_reason = str(finish)
        if usage is not None:
            if not isinstance(usage, dict):
                raise TypeError("usage is not an object")
            self.usage = usage
            completion = usage.get("completion_tokens")
            if isinstance(completion, int) and choices:
                carried = max(completion - self._tokens, 0)
        return carried
