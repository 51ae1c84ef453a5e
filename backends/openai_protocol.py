"""OpenAI streaming protocol, client side: the request body, and an incremental SSE parser that counts tokens.

The parser is called once per SSE line on the load path, so it does the least work that answers
"does this line carry tokens, and how many".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.sse import EventParser

ENDPOINT_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass(frozen=True)
class OpenAIProtocol:
    endpoint: str = "completions"  # or "chat"
    ignore_eos: bool = True
    # vLLM's stream_options.continuous_usage_stats: usage in every chunk, so a token whose text is empty (a partial
    # UTF-8 sequence, a special token) is still counted, and the first token is timed even when it prints nothing.
    continuous_usage: bool = False

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


class OpenAIStreamParser(EventParser):
    """OpenAI completions/chat chunks: tokens in choices[].text or choices[].delta.content; usage at the end
    (or in every chunk with continuous usage stats, which then gives the exact tokens per chunk)."""

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
