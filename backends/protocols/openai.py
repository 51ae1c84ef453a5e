"""OpenAI streaming protocol, client side: the request body, and an incremental SSE parser that counts tokens.

The parser is called once per SSE line on the load path, so it does the least work that answers
"does this line carry tokens, and how many".
"""

from __future__ import annotations

import re
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


# The cheap scan: does a chunk hold a non-empty "text" (completions) or "content" (chat delta) string? A quote
# inside a string is escaped, so a quoted key followed by a colon can only be a real key.
_CARRIES_TEXT = re.compile(rb'"(?:text|content)"\s*:\s*"(?!")')
_HAS_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_NO_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_FINISH_REASON = re.compile(rb'"finish_reason"\s*:\s*"([^"]*)"')


class OpenAIStreamParser(EventParser):
    """OpenAI completions/chat chunks: tokens in choices[].text or choices[].delta.content; usage at the end
    (or in every chunk with continuous usage stats, which then gives the exact tokens per chunk).

    Only the first chunk (for its id), the final usage chunk, anything that mentions "error" or is not one
    JSON object, and every chunk when the text is collected are parsed as JSON; the other chunks, nearly all
    of a stream, are answered by a byte scan (about 1 us instead of 3 on the load path)."""

    def feed(self, line: bytes) -> int:
        if self.text is not None or self.response_id is None:
            return super().feed(line)
        data = self.data(line)
        if data is None:
            return 0
        if data[:1] != b"{" or data[-1:] != b"}" or b'"error"' in data:
            return self.parse(data)  # malformed data or an error event: the full parse reports it
        if _HAS_USAGE.search(data):
            if _NO_CHOICES.search(data):
                return self.parse(data)  # the final usage chunk: parsed once
            counted = _COMPLETION_TOKENS.search(data)  # continuous usage: exact tokens in this chunk
            if counted:
                completion = int(counted.group(1))
                self.usage = {**(self.usage or {}), "completion_tokens": completion}
                self._finish(data)
                carried, self._tokens = completion - self._tokens, completion
                return carried
        self._finish(data)
        return 1 if _CARRIES_TEXT.search(data) else 0

    def _finish(self, data: bytes) -> None:
        found = _FINISH_REASON.search(data)
        if found:
            self.finish_reason = found.group(1).decode()

    def event(self, chunk: dict) -> int:
        if self.response_id is None:
            self.response_id = chunk.get("id")
        usage = chunk.get("usage")
        choices = chunk.get("choices") or ()
        carried = 0
        for choice in choices:
            text = choice.get("text")
            if text is None:
                text = (choice.get("delta") or {}).get("content")
            if text:
                carried = 1
                if self.text is not None:
                    self.text.append(text)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if usage:
            self.usage = usage
            completion = usage.get("completion_tokens")
            if isinstance(completion, int) and choices:
                carried, self._tokens = completion - self._tokens, completion
        return carried
