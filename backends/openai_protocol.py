"""OpenAI streaming protocol, client side: the request body, and an incremental SSE parser that counts tokens.

The parser is called once per SSE line on the load path, so it does the least work that answers
"does this line carry tokens, and how many".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ENDPOINT_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass(frozen=True)
class OpenAIProtocol:
    endpoint: str = "completions"  # or "chat"
    ignore_eos: bool = True

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
            "stream_options": {"include_usage": True},
            "temperature": 0.0,
        }
        if self.ignore_eos:
            # vLLM/SGLang honour ignore_eos; min_tokens is the portable way to force the length elsewhere.
            body["ignore_eos"] = True
            body["min_tokens"] = output_tokens
        if self.endpoint == "chat":
            text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = prompt
        return body

    def parser(self, collect_text: bool = False) -> "OpenAIStreamParser":
        return OpenAIStreamParser(collect_text)


class OpenAIStreamParser:
    """Feed it SSE lines; it says how many tokens each carried and keeps usage, id and errors."""

    __slots__ = ("done", "usage", "response_id", "error", "finish_reason", "_usage_tokens", "text")
    done_at_eof = False  # the stream must end with [DONE]

    def __init__(self, collect_text: bool = False) -> None:
        self.text: list[str] | None = [] if collect_text else None  # kept only to count tokens without usage
        self.done = False
        self.usage: dict[str, int] | None = None
        self.response_id: str | None = None
        self.error: str | None = None
        self.finish_reason: str | None = None
        self._usage_tokens = 0

    def feed(self, line: bytes) -> int:
        """Tokens carried by this line: 0 for keep-alives, role-only deltas, usage-only and [DONE] lines."""
        if not line.startswith(b"data:"):
            return 0  # blank separators, "event:" and ":" comment lines
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return 0
        try:
            chunk = json.loads(data)
        except ValueError:
            self.error = f"malformed SSE data: {data[:120]!r}"
            return 0
        if not isinstance(chunk, dict):
            self.error = f"unexpected SSE data: {data[:120]!r}"
            return 0
        if "error" in chunk:
            err = chunk["error"]
            self.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            return 0
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
                # Continuous usage stats: the exact number of tokens in this chunk.
                carried, self._usage_tokens = completion - self._usage_tokens, completion
        return carried
