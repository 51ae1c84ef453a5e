"""Framework name -> adapter, and endpoint name -> protocol."""

from __future__ import annotations

from backends import lightllm, sglang, tgi, trtllm, vllm
from backends.errors import BackendError
from backends.launch_spec import Adapter
from backends.protocols.native import LightLLMProtocol, TGIProtocol, TritonProtocol
from backends.protocols.openai import OpenAIProtocol

FRAMEWORKS: dict[str, Adapter] = {
    "vllm": vllm.launch,
    "tgi": tgi.launch,
    "trtllm": trtllm.launch,
    "lightllm": lightllm.launch,
    "sglang": sglang.launch,
}
ENDPOINTS = ("completions", "chat", "tgi", "lightllm", "triton")
CONTINUOUS_USAGE_BACKENDS = frozenset({"vllm"})  # accept stream_options.continuous_usage_stats
IGNORE_EOS_BACKENDS = frozenset({"vllm", "sglang", "lightllm", "sim"})  # honour ignore_eos: no min_tokens needed


def protocol_for(endpoint: str, ignore_eos: bool = True, backend: str | None = None):
    if endpoint in ("completions", "chat"):
        return OpenAIProtocol(endpoint, ignore_eos, continuous_usage=backend in CONTINUOUS_USAGE_BACKENDS,
                              min_tokens=backend not in IGNORE_EOS_BACKENDS)
    if endpoint == "tgi":
        return TGIProtocol(ignore_eos=ignore_eos)
    if endpoint == "lightllm":
        return LightLLMProtocol(ignore_eos=ignore_eos)
    if endpoint == "triton":
        return TritonProtocol(ignore_eos=ignore_eos)
    raise BackendError(f"unknown endpoint {endpoint!r}; choose one of {', '.join(ENDPOINTS)}")


def adapter(name: str) -> Adapter:
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of sim, openai, {', '.join(FRAMEWORKS)}") from None
