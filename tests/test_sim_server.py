"""The simulated engine as a real HTTP server in its own process."""

import asyncio
import json
import urllib.request

import aiohttp
import pytest

from tests.conftest import run_loadgen


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


async def _stream(url, body):
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=body) as resp:
            return resp.status, [line async for line in resp.content if line.strip()]


def test_completions_stream_and_usage(start_sim):
    sim = start_sim("--model", "7b")
    status, lines = asyncio.run(_stream(sim.url + "/v1/completions", {
        "prompt": "one two three four five", "max_tokens": 6, "stream": True,
        "stream_options": {"include_usage": True}}))
    assert status == 200
    assert lines[-1].strip() == b"data: [DONE]"
    chunks = [json.loads(line[5:]) for line in lines[:-1]]
    tokens = [c for c in chunks if c["choices"] and c["choices"][0]["text"]]
    assert len(tokens) == 6 and tokens[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    truth = get_json(sim.url + "/sim/requests")["requests"]
    assert truth[0]["status"] == "ok" and truth[0]["first_token_ns"] < truth[0]["finished_ns"]
    info = get_json(sim.url + "/sim/info")
    assert info["simulated"] is True and info["model"] == "llama-2-7b"


def test_chat_stream_and_non_stream(start_sim):
    sim = start_sim("--model", "tiny", "--gpu", "rtx3090")
    status, lines = asyncio.run(_stream(sim.url + "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3, "stream": True}))
    assert status == 200
    deltas = [json.loads(line[5:])["choices"][0]["delta"] for line in lines[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""} and sum(1 for d in deltas if d.get("content")) == 3
    req = urllib.request.Request(sim.url + "/v1/completions", data=json.dumps({"prompt": [1, 2, 3], "max_tokens": 4}).encode(),
                                 headers={"Content-Type": "application/json"})
    body = json.loads(urllib.request.urlopen(req, timeout=10).read())
    assert body["usage"]["completion_tokens"] == 4 and len(body["choices"][0]["text"].split()) == 4


def test_rejects_over_context_and_bad_bodies(start_sim):
    sim = start_sim("--model", "tiny")
    status, lines = asyncio.run(_stream(sim.url + "/v1/completions", {"prompt": "a " * 2000, "max_tokens": 100}))
    assert status == 400 and b"maximum context length" in b"".join(lines)
    status, _ = asyncio.run(_stream(sim.url + "/v1/completions", {"prompt": {"x": 1}}))
    assert status == 400


def test_prometheus_metrics(start_sim):
    sim = start_sim()
    text = urllib.request.urlopen(sim.url + "/metrics", timeout=10).read().decode()
    assert 'vllm:num_requests_running{model_name="llama-2-7b"} 0' in text
    assert "vllm:kv_cache_usage_perc" in text


@pytest.mark.slow
def test_kv_bound_load_queues_on_the_server(start_sim):
    """7B on a 24 GB card holds ~14k tokens of KV; 24 requests of 1500 + 200 tokens must wait their turn."""
    sim = start_sim("--model", "7b", "--gpu", "rtx4090")

    async def go():
        async with aiohttp.ClientSession() as s:
            async def one():
                async with s.post(sim.url + "/v1/completions",
                                  json={"prompt": "w " * 1500, "max_tokens": 200, "stream": True}) as r:
                    async for _ in r.content:
                        pass
            await asyncio.gather(*(one() for _ in range(24)))

    asyncio.run(go())
    info = get_json(sim.url + "/sim/info")
    assert info["kv_capacity_tokens"] < 24 * 1700
    truth = get_json(sim.url + "/sim/requests")["requests"]
    assert all(t["status"] == "ok" and t["completion_tokens"] == 200 for t in truth)
    ttft = sorted((t["first_token_ns"] - t["received_ns"]) / 1e6 for t in truth)
    # the first wave starts within a few prefill steps; the last waits for earlier requests to finish
    assert ttft[-1] > 5 * ttft[0]


def test_fixed_timing_mode_gives_a_known_ground_truth(tmp_path, start_sim):
    """`serve-sim --fixed-ttft 20ms --fixed-itl 5ms`: every request's first token 20 ms after arrival, then one
    every 5 ms, whatever the load (the target of the load generator's own capacity benchmark)."""
    sim = start_sim("--fixed-ttft", "20ms", "--fixed-itl", "5ms")
    out = tmp_path / "r"
    proc = run_loadgen("run", "--url", sim.url, "--concurrency", "16", "--num-requests", "48", "--input-len", "32",
                       "--output-len", "10", "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    truth = json.loads(urllib.request.urlopen(sim.url + "/sim/requests").read())["requests"]
    assert len(truth) == 48
    for g in truth:  # the schedule, exactly: first token 20 ms after it was received, then one every 5 ms
        assert abs(g["due_first_token_ns"] - g["received_ns"] - 20_000_000) <= 1_000  # ns: float rounding
        assert abs(g["due_finished_ns"] - g["due_first_token_ns"] - 9 * 5_000_000) <= 1_000
        # what was written is never early (how late is this machine's load: benchmarks/loadgen_capacity.py)
        assert g["first_token_ns"] >= g["due_first_token_ns"] - 1_000 and g["finished_ns"] >= g["due_finished_ns"]
    info = json.loads(urllib.request.urlopen(sim.url + "/sim/info").read())
    assert "fixed timing" in json.dumps(info)


def test_live_engine_steps_at_the_cpu_pace_when_the_gpu_is_quicker(start_sim):
    """A tiny model's GPU step (~1.6 ms) is shorter than a step's launch (2.24 ms): under asynchronous scheduling the
    engine can go no faster than its CPU, so the live sim decodes at the launch's pace, as the replay predicts (a
    model of GPU time alone would say 1.6 ms, 29% less)."""
    from backends.sim.config import build_config
    from backends.sim.replay import replay
    from backends.sim.roofline import SeqWork

    cfg = build_config("tiny", "h100", 1)
    step = cfg.step_cost([SeqWork(1, 40, True)])
    assert step.seconds < 0.75 * step.launch_s
    predicted = replay(cfg, 32, 200, 1, qps=0.001)[0]
    sim = start_sim("--model", "tiny")
    status, _ = asyncio.run(_stream(sim.url + "/v1/completions", {"prompt": "w " * 32, "max_tokens": 200,
                                                                   "stream": True}))
    assert status == 200
    truth = get_json(sim.url + "/sim/requests")["requests"][0]
    tpot = (truth["finished_ns"] - truth["first_token_ns"]) / 199 / 1e9
    # Never faster than the launch's pace (GPU time alone would be 29% faster). The live sim sleeps to each due
    # step and a busy machine only wakes it later, so no upper bound: how close a live run comes to the replay is
    # this machine's speed. 5% below: the first token may be written late and the last on time (13 ms / 199).
    assert tpot >= 0.95 * predicted.tpot_s and tpot > step.seconds * 1.2
    ttft = (truth["first_token_ns"] - truth["received_ns"]) / 1e9
    assert ttft >= predicted.ttft_s - 0.5e-3  # request overhead and prefill are slept through, never skipped
