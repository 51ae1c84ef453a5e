"""The OpenAI stream parser and the client's token accounting, on crafted SSE lines."""

import asyncio

from aiohttp import web

from backends.protocols.openai import OpenAIProtocol, OpenAIStreamParser
from loadgen.client import Target, make_session, send_request
from loadgen.workload.specs import RequestSpec


def event(parser, line: bytes) -> int:
    """One SSE event: its line, then the blank line that ends it (the spec's framing)."""
    return parser.feed(line) + parser.feed(b"")


def test_parser_counts_token_bearing_chunks_only():
    p = OpenAIStreamParser(collect_text=True)
    assert event(p, b'data: {"id":"c1","choices":[{"delta":{"role":"assistant","content":""}}]}') == 0
    assert event(p, b'data: {"id":"c1","choices":[{"delta":{"content":"Hi"}}]}') == 1
    assert p.feed(b"") == 0 and p.feed(b": keep-alive") == 0
    assert event(p, b'data: {"id":"c1","choices":[{"delta":{"content":" there"},"finish_reason":"length"}]}') == 1
    assert event(p, b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}') == 0
    assert event(p, b"data: [DONE]") == 0
    assert p.done and p.response_id == "c1" and p.finish_reason == "length"
    assert p.usage == {"prompt_tokens": 3, "completion_tokens": 2} and "".join(p.text) == "Hi there"


def test_continuous_usage_gives_exact_tokens_per_chunk():
    p = OpenAIStreamParser()
    assert event(p, b'data: {"choices":[{"text":"ab"}],"usage":{"completion_tokens":2}}') == 2
    assert event(p, b'data: {"choices":[{"text":"c"}],"usage":{"completion_tokens":5}}') == 3


STREAMS = {
    "vllm completions": [
        b'data: {"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"","finish_reason":null}],"usage":null}',
        b'data: {"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":" a","logprobs":null,"finish_reason":null}],"usage":null}',
        b'data: {"id":"cmpl-1","choices":[{"index":0,"text":"\\\"text\\\":\\\"","finish_reason":null}],"usage":null}',
        b'data: {"id":"cmpl-1","choices":[{"index":0,"text":null,"finish_reason":null}],"usage":null}',
        b'data: {"id":"cmpl-1","choices":[{"index":0,"text":"z","finish_reason":"length"}],"usage":null}',
        b'data: {"id":"cmpl-1","choices":[],"usage":{"prompt_tokens":4,"total_tokens":7,"completion_tokens":3}}',
        b"data: [DONE]",
    ],
    "chat, spaced json": [
        b'data: {"id": "c", "choices": [{"delta": {"role": "assistant", "content": ""}}]}',
        b'data: {"id": "c", "choices": [{"delta": {"content": "Hi"}, "logprobs": {"content": []}}]}',
        b'data: {"id": "c", "choices": [{"delta": {"content": null, "tool_calls": []}}]}',
        b'data: {"id": "c", "choices": [{"delta": {"content": "!"}, "finish_reason": "stop"}]}',
        b"data: [DONE]",
    ],
    "continuous usage": [
        b'data: {"id":"v","choices":[{"text":"ab"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}',
        b'data: {"id":"v","choices":[{"text":""}],"usage":{"prompt_tokens":5,"completion_tokens":3}}',
        b'data: {"id":"v","choices":[{"text":"c","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":6}}',
        b'data: {"id":"v","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":6}}',
        b"data: [DONE]",
    ],
    "error mid-stream": [
        b'data: {"id":"e","choices":[{"text":"a"}]}',
        b'data: {"id":"e","error":{"message":"engine died"}}',
    ],
    "malformed mid-stream": [
        b'data: {"id":"m","choices":[{"text":"a"}]}',
        b'data: {"id":"m","choices":[{"text":"a"}]',
    ],
}


def test_collecting_the_text_changes_no_count():
    """With and without the text collected (--tokenizer), the same tokens per chunk, usage, finish reason,
    errors and end."""
    for name, lines in STREAMS.items():
        scan, full = OpenAIStreamParser(), OpenAIStreamParser(collect_text=True)
        assert [event(scan, x) for x in lines] == [event(full, x) for x in lines], name
        assert (scan.done, scan.finish_reason, scan.error, scan.response_id) == \
            (full.done, full.finish_reason, full.error, full.response_id), name
        assert (scan.usage or {}).get("completion_tokens") == (full.usage or {}).get("completion_tokens"), name
        assert (scan.usage or {}).get("prompt_tokens") == (full.usage or {}).get("prompt_tokens"), name


def test_stream_errors_are_kept():
    p = OpenAIStreamParser()
    event(p, b'data: {"error":{"message":"out of memory"}}')
    assert p.error == "out of memory"
    q = OpenAIStreamParser()
    event(q, b"data: {broken")
    assert q.error.startswith("malformed SSE data")


def test_payload_forces_length_and_usage():
    body = OpenAIProtocol("chat").payload("m", "hello", 7)
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["max_tokens"] == 7 and body["min_tokens"] == 7 and body["ignore_eos"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert "ignore_eos" not in OpenAIProtocol("completions", ignore_eos=False).payload("m", "x", 1)


def test_min_tokens_only_for_servers_that_may_ignore_ignore_eos():
    """vLLM, SGLang and the sim honour ignore_eos; min_tokens on top would make vLLM's min-tokens logits
    processor work in every step. An unknown OpenAI-compatible server gets both."""
    from backends.registry import protocol_for

    for backend in ("vllm", "sglang", "sim"):
        body = protocol_for("completions", True, backend).payload("m", "x", 9)
        assert body["ignore_eos"] is True and "min_tokens" not in body
    assert protocol_for("completions", True, "openai").payload("m", "x", 9)["min_tokens"] == 9
    assert "min_tokens" not in protocol_for("chat", False, "openai").payload("m", "x", 9)


def test_output_tokens_from_tokenizer_when_server_gives_no_usage():
    """A server that streams 3 chunks of two words each and no usage: a word-counting tokenizer says 6."""

    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for words in ("a b", " c d", " e f"):
            await resp.write(f'data: {{"id":"x","choices":[{{"text":"{words}"}}]}}\n\n'.encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def go():
        app = web.Application()
        app.router.add_post("/v1/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        spec = RequestSpec(0, "p", 1, 6)
        try:
            async with make_session(0) as s:
                counted = await send_request(s, Target(f"http://127.0.0.1:{port}", "m", OpenAIProtocol(),
                                                       count_tokens=lambda t: len(t.split())),
                                             spec, 0, "measured", None, 10)
                chunked = await send_request(s, Target(f"http://127.0.0.1:{port}", "m", OpenAIProtocol()),
                                             spec, 0, "measured", None, 10)
        finally:
            await runner.cleanup()
        return counted, chunked

    counted, chunked = asyncio.run(go())
    assert (counted.output_tokens, counted.output_tokens_source) == (6, "tokenizer")
    assert (chunked.output_tokens, chunked.output_tokens_source) == (3, "chunks")
    assert counted.ok and len(counted.token_times_ms) == 3
