"""The frameworks' own streaming protocols beside OpenAI's: TGI and LightLLM `/generate_stream`, and Triton's
generate extension (`/v2/models/<model>/generate_stream`, TensorRT-LLM's ensemble).

Each protocol builds the request body (forcing the output length where the API allows) and gives a parser
with the OpenAI parser's interface: feed(line) -> tokens carried; done, usage, response_id, error, text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class _EventParser:
    """Shared SSE handling: `data:` lines holding one JSON object each."""

    __slots__ = ("done", "usage", "response_id", "error", "finish_reason", "text", "_tokens")
    done_at_eof = False

    def __init__(self, collect_text: bool = False) -> None:
        self.done = False
        self.usage: dict[str, int] | None = None
        self.response_id: str | None = None
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.text: list[str] | None = [] if collect_text else None
        self._tokens = 0

    def feed(self, line: bytes) -> int:
        if not line.startswith(b"data:"):
            return 0
        data = line[5:].strip()
        if not data:
            return 0
        if data == b"[DONE]":
            self.done = True
            return 0
        try:
            event = json.loads(data)
        except ValueError:
            self.error = f"malformed SSE data: {data[:120]!r}"
            return 0
        if not isinstance(event, dict):
            self.error = f"unexpected SSE data: {data[:120]!r}"
            return 0
        if "error" in event:
            err = event["error"]
            self.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            return 0
        return self.event(event)

    def event(self, event: dict) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _text(self, piece: str | None) -> None:
        if piece and self.text is not None:
            self.text.append(piece)


class TGIStreamParser(_EventParser):
    """TGI: one event per token, {"token": {"id", "text", "special"}, "generated_text", "details"}; the last
    event has generated_text and details (finish_reason, generated_tokens)."""

    def event(self, event: dict) -> int:
        token = event.get("token") or {}
        carried = 0
        if token and not token.get("special", False):
            carried = 1
            self._tokens += 1
            self._text(token.get("text"))
        details = event.get("details")
        if event.get("generated_text") is not None or details:
            self.done = True
            if isinstance(details, dict):
                self.finish_reason = details.get("finish_reason")
                if isinstance(details.get("generated_tokens"), int):
                    self.usage = {"completion_tokens": details["generated_tokens"]}
        return carried


class LightLLMStreamParser(_EventParser):
    """LightLLM: TGI-like events with "finished" and "finish_reason"; tokens may carry count_output_tokens."""

    def event(self, event: dict) -> int:
        token = event.get("token") or {}
        carried = 0
        if token and not token.get("special", False):
            carried = 1
            self._tokens += 1
            self._text(token.get("text"))
            if isinstance(token.get("count_output_tokens"), int):
                self.usage = {"completion_tokens": token["count_output_tokens"]}
        if event.get("finished"):
            self.done = True
            self.finish_reason = event.get("finish_reason")
        return carried


class TritonStreamParser(_EventParser):
    """Triton generate_stream: one event per response with "text_output" (the new text when streaming);
    the stream simply ends, so end of stream means done."""

    done_at_eof = True

    def event(self, event: dict) -> int:
        if self.response_id is None:
            self.response_id = event.get("id") or None
        piece = event.get("text_output")
        if isinstance(piece, list):
            piece = "".join(map(str, piece))
        if piece:
            self._text(piece)
            return 1
        return 0


@dataclass(frozen=True)
class TGIProtocol:
    endpoint: str = "tgi"
    ignore_eos: bool = True
    path: str = "/generate_stream"

    def path_for(self, model: str) -> str:
        return self.path

    def payload(self, model: str, prompt: str | list[int], output_tokens: int) -> dict[str, Any]:
        # TGI has no ignore_eos: max_new_tokens caps the length and the record keeps the real count.
        return {"inputs": prompt if isinstance(prompt, str) else " ".join(map(str, prompt)),
                "parameters": {"max_new_tokens": output_tokens, "details": True, "do_sample": False}}

    def parser(self, collect_text: bool = False) -> TGIStreamParser:
        return TGIStreamParser(collect_text)


@dataclass(frozen=True)
class LightLLMProtocol:
    endpoint: str = "lightllm"
    ignore_eos: bool = True
    path: str = "/generate_stream"

    def path_for(self, model: str) -> str:
        return self.path

    def payload(self, model: str, prompt: str | list[int], output_tokens: int) -> dict[str, Any]:
        params: dict[str, Any] = {"max_new_tokens": output_tokens, "do_sample": False}
        if self.ignore_eos:
            params["ignore_eos"] = True
        return {"inputs": prompt if isinstance(prompt, str) else " ".join(map(str, prompt)), "parameters": params}

    def parser(self, collect_text: bool = False) -> LightLLMStreamParser:
        return LightLLMStreamParser(collect_text)


@dataclass(frozen=True)
class TritonProtocol:
    endpoint: str = "triton"
    ignore_eos: bool = True
    path: str = "/v2/models/{model}/generate_stream"

    def path_for(self, model: str) -> str:
        return self.path.format(model=model)

    def payload(self, model: str, prompt: str | list[int], output_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {"text_input": prompt if isinstance(prompt, str) else " ".join(map(str, prompt)),
                                "max_tokens": output_tokens, "stream": True, "bad_words": "", "stop_words": ""}
        if self.ignore_eos:
            body["end_id"] = -1  # TensorRT-LLM ensemble: no token ends the sequence early
        return body

    def parser(self, collect_text: bool = False) -> TritonStreamParser:
        return TritonStreamParser(collect_text)
