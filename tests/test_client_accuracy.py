"""The client's own timing error, measured against the sim's server-side ground truth."""

import asyncio
import json
import urllib.request

import numpy as np

from backends.openai_protocol import OpenAIProtocol
from loadgen.accuracy import timing_error
from loadgen.client import Target
from loadgen.distributions import LengthDistribution
from loadgen.runner import LoadPlan, run_load
from loadgen.workload import Workload


def test_ttft_error_p99_below_5ms_with_64_concurrent_streams(start_sim):
    """64 closed-loop users with a mixed length workload; the first wave (64 requests sent at the same
    instant, which the sim's single-threaded front end admits one after another) is the warm-up."""
    sim = start_sim("--model", "7b", "--gpus", "1")
    workload = Workload(LengthDistribution.parse("uniform:128,384"), LengthDistribution.parse("uniform:32,96"),
                        4096, seed=1)
    plan = LoadPlan(concurrency=64, num_requests=384, warmup=64, timeout_s=60)
    target = Target(sim.url, "llama-2-7b", OpenAIProtocol("completions"))
    outcome = asyncio.run(run_load(target, workload, plan, lambda r: None))
    assert len(outcome.records) == 448 and all(r.ok for r in outcome.records)
    assert all(r.output_tokens == r.target_output_tokens and r.input_tokens == r.target_input_tokens
               for r in outcome.records)
    truth = json.loads(urllib.request.urlopen(sim.url + "/sim/requests", timeout=10).read())["requests"]
    err = timing_error(outcome.records, truth, outcome.origin_ns)
    assert err["matched_requests"] == 384
    e = err["ttft_error_ms"]
    print(f"client TTFT error at 64 streams: p50 {e['p50']:.3f} ms, p99 {e['p99']:.3f} ms, max {e['max']:.3f} ms")
    assert e["min"] > -0.5  # the client can never see a token before the server wrote it
    assert e["p99"] < 5.0
    # per-request ITL samples are the server's pacing: decode steps of ~5-10 ms, never negative
    itl = np.concatenate([np.diff(r.token_times_ms) for r in outcome.records])
    assert itl.min() >= 0
