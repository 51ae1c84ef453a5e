"""The frameworks' own streaming protocols beside OpenAI's: TGI and LightLLM `/generate_stream`, and Triton's
generate extension (`/v2/models/<model>/generate_stream`, TensorRT-LLM's ensemble).

Each protocol builds the request body (forcing the output length where the API allows) and gives a parser
with the OpenAI parser's interface: feed(line) -> tokens carried; done, usage, response_id, error, text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.protocols.sse import EventParser as _EventParser


class _TokenEventParser(_EventParser):
    """TGI-style events: one generated token per event under "token"; special tokens carry no text."""

    def _token(self, token: dict | None) -> int:
        if not token or token.get("special", False):
            return 0
        self._text(token.get("text"))
        return 1


class TGIStreamParser(_TokenEventParser):
    """TGI: one event per token, {"token": {"id", "text", "special"}, "generated_text", "details"}; the last
    event has generated_text and details (finish_reason, generated_tokens)."""

    def event(self, event: dict) -> int:
        carried = self._token(event.get("token"))
        details = event.get("details")
        if event.get("generated_text") is not None or details:
            self.done = True
            if isinstance(details, dict):
                self.finish_reason = details.get("finish_reason")
                if isinstance(details.get("generated_tokens"), int):
                    self.usage = {"completion_tokens": details["generated_tokens"]}
        return carried


class LightLLMStreamParser(_TokenEventParser):
    """LightLLM: TGI-like events with "finished" and "finish_reason"; each token carries count_output_tokens
    and prompt_tokens (the server's own count of the prompt, so the record says what was really prefilled)."""

    def event(self, event: dict) -> int:
        token = event.get("token") or {}
        carried = self._token(token)
        if carried and isinstance(token.get("count_output_tokens"), int):
            self.usage = {**(self.usage or {}), "completion_tokens": token["count_output_tokens"]}
        prompt = token.get("prompt_tokens")
        if isinstance(prompt, int) and not isinstance(prompt, bool) and prompt > 0:
            self.usage = {**(self.usage or {}), "prompt_tokens": prompt}
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


def _text_prompt(prompt: str | list[int]) -> str:
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


@dataclass(frozen=True)
class _GenerateStreamProtocol:
    """TGI-style `{"inputs": ..., "parameters": {...}}` to /generate_stream."""

    endpoint: str = ""
    ignore_eos: bool = True
    path: str = "/generate_stream"
    parser_class: type = _EventParser

    def path_for(self, model: str) -> str:
        return self.path

    def parameters(self, output_tokens: int) -> dict[str, Any]:
        return {"max_new_tokens": output_tokens, "do_sample": False}

    def payload(self, model: str, prompt: str | list[int], output_tokens: int) -> dict[str, Any]:
        return {"inputs": _text_prompt(prompt), "parameters": self.parameters(output_tokens)}

    def parser(self, collect_text: bool = False) -> _EventParser:
        return self.parser_class(collect_text)


@dataclass(frozen=True)
class TGIProtocol(_GenerateStreamProtocol):
    endpoint: str = "tgi"
    parser_class: type = TGIStreamParser

    def parameters(self, output_tokens: int) -> dict[str, Any]:
        # TGI has no ignore_eos: max_new_tokens caps the length and the record keeps the real count.
        return {**super().parameters(output_tokens), "details": True}


@dataclass(frozen=True)
class LightLLMProtocol(_GenerateStreamProtocol):
    endpoint: str = "lightllm"
    parser_class: type = LightLLMStreamParser

    def parameters(self, output_tokens: int) -> dict[str, Any]:
        params = super().parameters(output_tokens)
        if self.ignore_eos:
            params["ignore_eos"] = True
        return params


@dataclass(frozen=True)
class TritonProtocol:
    endpoint: str = "triton"
    ignore_eos: bool = True
    path: str = "/v2/models/{model}/generate_stream"

    def path_for(self, model: str) -> str:
        return self.path.format(model=model)

    def payload(self, model: str, prompt: str | list[int], output_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {"text_input": _text_prompt(prompt),
                                "max_tokens": output_tokens, "stream": True, "bad_words": "", "stop_words": ""}
        if self.ignore_eos:
            body["end_id"] = -1  # TensorRT-LLM ensemble: no token ends the sequence early
        return body

    def parser(self, collect_text: bool = False) -> TritonStreamParser:
        return TritonStreamParser(collect_text)
