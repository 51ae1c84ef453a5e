"""The OpenAI stream parser and the client's token accounting, on crafted SSE lines."""

import asyncio

from aiohttp import web

from backends.openai_protocol import OpenAIProtocol, OpenAIStreamParser
from loadgen.client import Target, make_session, send_request
from loadgen.workload import RequestSpec


def test_parser_counts_token_bearing_chunks_only():
    p = OpenAIStreamParser(collect_text=True)
    assert p.feed(b'data: {"id":"c1","choices":[{"delta":{"role":"assistant","content":""}}]}') == 0
    assert p.feed(b'data: {"id":"c1","choices":[{"delta":{"content":"Hi"}}]}') == 1
    assert p.feed(b"") == 0 and p.feed(b": keep-alive") == 0
    assert p.feed(b'data: {"id":"c1","choices":[{"delta":{"content":" there"},"finish_reason":"length"}]}') == 1
    assert p.feed(b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}') == 0
    assert p.feed(b"data: [DONE]") == 0
    assert p.done and p.response_id == "c1" and p.finish_reason == "length"
    assert p.usage == {"prompt_tokens": 3, "completion_tokens": 2} and "".join(p.text) == "Hi there"


def test_continuous_usage_gives_exact_tokens_per_chunk():
    p = OpenAIStreamParser()
    assert p.feed(b'data: {"choices":[{"text":"ab"}],"usage":{"completion_tokens":2}}') == 2
    assert p.feed(b'data: {"choices":[{"text":"c"}],"usage":{"completion_tokens":5}}') == 3


def test_stream_errors_are_kept():
    p = OpenAIStreamParser()
    p.feed(b'data: {"error":{"message":"out of memory"}}')
    assert p.error == "out of memory"
    q = OpenAIStreamParser()
    q.feed(b"data: {broken")
    assert q.error.startswith("malformed SSE data")


def test_payload_forces_length_and_usage():
    body = OpenAIProtocol("chat").payload("m", "hello", 7)
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["max_tokens"] == 7 and body["min_tokens"] == 7 and body["ignore_eos"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert "ignore_eos" not in OpenAIProtocol("completions", ignore_eos=False).payload("m", "x", 1)


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
