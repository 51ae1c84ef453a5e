"""PROTOCOL FIXTURE, for tests only: a local server that speaks each framework's documented streaming wire
format (TGI, LightLLM, Triton generate_stream, OpenAI) with fixed timing. It is not the framework and says
nothing about its performance; it exists so that loadgen's adapters and parsers can be tested here, where the
frameworks cannot be installed.

    python tests/protocol_fixture.py --port 8000 [--tokens-per-event 1] [--die-after N]
It also accepts and ignores any framework-style flags (--model, --host, --tp, ...) so the real launch argv of
an adapter can start it through --engine-cmd.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from aiohttp import web

from backends.eventloop import serve_until_stopped


def build_app(itl: float, die_after: int | None, native: str = "tgi") -> web.Application:
    """native: which format /generate_stream speaks, "tgi" or "lightllm"."""
    state = {"served": 0}

    def maybe_die() -> None:
        state["served"] += 1
        if die_after is not None and state["served"] > die_after:
            os._exit(3)  # a crash mid-run

    async def sse(request, events: list[str], end: bytes | None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for e in events:
            await resp.write(f"data:{e}\n\n".encode())
            await asyncio.sleep(itl)
        if end:
            await resp.write(end)
        await resp.write_eof()
        return resp

    async def tgi(request: web.Request):
        maybe_die()
        body = await request.json()
        n = body["parameters"]["max_new_tokens"]
        events = [json.dumps({"index": i + 1, "token": {"id": 100 + i, "text": f" w{i}", "logprob": -0.1,
                                                        "special": False},
                              "generated_text": None, "details": None}) for i in range(n - 1)]
        events.append(json.dumps({"index": n, "token": {"id": 2, "text": f" w{n - 1}", "logprob": -0.1, "special": False},
                                  "generated_text": "text", "details": {"finish_reason": "length",
                                                                        "generated_tokens": n, "seed": None}}))
        return await sse(request, events, None)

    async def lightllm(request: web.Request):
        maybe_die()
        body = await request.json()
        n = body["parameters"]["max_new_tokens"]
        assert body["parameters"].get("ignore_eos") is True
        prompt_tokens = len(body["inputs"].split())  # one token per word, as the sim counts
        events = [json.dumps({"token": {"id": 100 + i, "text": f" w{i}", "logprob": -0.1, "special": False,
                                        "count_output_tokens": i + 1, "prompt_tokens": prompt_tokens},
                              "generated_text": None, "finished": i == n - 1,
                              "finish_reason": "length" if i == n - 1 else None, "details": None})
                  for i in range(n)]
        return await sse(request, events, None)

    async def triton(request: web.Request):
        maybe_die()
        body = await request.json()
        n = body["max_tokens"]
        name = request.match_info["model"]
        events = [json.dumps({"model_name": name, "model_version": "1", "text_output": f" w{i}"}) for i in range(n)]
        return await sse(request, events, None)

    async def openai(request: web.Request):
        maybe_die()
        body = await request.json()
        n = body["max_tokens"]
        events = [json.dumps({"id": "cmpl-fx", "choices": [{"index": 0, "text": f" w{i}", "finish_reason": None}]})
                  for i in range(n)]
        events.append(json.dumps({"id": "cmpl-fx", "choices": [],
                                  "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}}))
        return await sse(request, events, b"data: [DONE]\n\n")

    async def health(request):
        return web.Response(text="ok")

    async def models(request):
        return web.json_response({"data": [{"id": "fixture-model", "max_model_len": 2048}]})

    async def metrics(request):
        running = state["served"] % 3
        return web.Response(text=(
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="fixture-model"}} {running}\n'
            "# TYPE fixture_requests_served counter\n"
            f"fixture_requests_served_total {state['served']}\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            'vllm:num_requests_waiting{model_name="fixture-model"} 0\n'
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            'vllm:kv_cache_usage_perc{model_name="fixture-model"} 0.25\n'
            "# TYPE vllm:time_to_first_token_seconds histogram\n"
            'vllm:time_to_first_token_seconds_bucket{le="0.01",model_name="fixture-model"} 3\n'
            'vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="fixture-model"} 9\n'
            'vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="fixture-model"} 10\n'
            'vllm:time_to_first_token_seconds_count{model_name="fixture-model"} 10\n'
            'vllm:time_to_first_token_seconds_sum{model_name="fixture-model"} 0.5\n'), content_type="text/plain")

    async def version(request):
        return web.json_response({"version": "fixture-0.0"})

    app = web.Application()
    app.add_routes([web.post("/generate_stream", lightllm if native == "lightllm" else tgi),
                    web.post("/v2/models/{model}/generate_stream", triton), web.post("/v1/completions", openai),
                    web.get("/health", health), web.get("/v1/models", models), web.get("/metrics", metrics),
                    web.get("/version", version)])
    return app


def main() -> None:
    if "-c" in sys.argv:  # stands in for the engine's interpreter too: `EXE -c CODE` (the version probe)
        exec(sys.argv[sys.argv.index("-c") + 1], {})
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--itl", type=float, default=0.002)
    parser.add_argument("--die-after", type=int, default=None)
    parser.add_argument("--native", choices=["tgi", "lightllm"], default="tgi",
                        help="the format /generate_stream speaks")
    args, _unknown = parser.parse_known_args()
    app = build_app(args.itl, args.die_after, args.native)

    serve_until_stopped(app, args.host, args.port)

if __name__ == "__main__":
    main()
