"""An open loop makes each prompt a little ahead of its send time, not every prompt before the clock: memory is
flat in the run's length, and the same seed still gives the same requests at the same offsets, whatever the
number of client processes."""

import asyncio
import gc
import hashlib
import json
import time
import urllib.request
import weakref
from collections import Counter
from pathlib import Path

import numpy as np

from backends.protocols.openai import OpenAIProtocol
from conftest import read_requests, run_loadgen
from loadgen.client import Target
from loadgen.load import LoadPlan, run_load
from loadgen.load.arrivals import AHEAD_MIN, AHEAD_S, ArrivalProcess, Schedule
from loadgen.load.plans import CLOSED_AHEAD_MAX, shape_of
from loadgen.workload.datasets import load_dataset
from loadgen.workload.distributions import LengthDistribution as L
from loadgen.workload.specs import DatasetWorkload, Workload

ROOT = Path(__file__).resolve().parent.parent


class LiveWorkload(Workload):
    """Counts the specs made, and keeps a weak reference to each: what is still alive is what is materialised."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alive: weakref.WeakSet = weakref.WeakSet()
        self.made_ns: list[int] = []

    def specs(self, batch: int = 256):
        for spec in super().specs(batch):
            self.alive.add(spec)
            self.made_ns.append(time.perf_counter_ns())
            yield spec


def _alive(workload: LiveWorkload) -> int:
    gc.collect()
    return len(workload.alive)


def test_a_20_minute_run_at_50_per_second_holds_a_few_seconds_of_prompts():
    """The whole schedule of `--duration 20m --qps 50` is walked as `drive` walks it (take the next item, make
    ahead until it is due), dropping each spec once it is "sent": never more than the look-ahead is alive."""
    workload = LiveWorkload(L.parse("uniform:4,24"), L.parse("8"), 4096, seed=9)
    plan = LoadPlan(arrival=ArrivalProcess("poisson", 50.0), duration_s=1200.0, seed=9)
    schedule = shape_of(plan).prepare(workload)
    bound = max(AHEAD_MIN, int(50 * AHEAD_S * 1.5)) + 1  # the look-ahead window, with room for Poisson bunching
    assert _alive(workload) <= bound
    peak, sent = 0, 0
    while (item := schedule.take()) is not None:
        position, spec, offset = item
        assert position == sent
        schedule.make_ahead(offset)
        del item, spec
        sent += 1
        if sent % 997 == 0:
            peak = max(peak, _alive(workload))
    expected = ArrivalProcess("poisson", 50.0).offsets(np.random.default_rng([9, 3]), duration=1200.0)
    assert sent == len(expected) > 59_000 and schedule.made == sent
    assert 0 < peak <= bound


def test_send_times_drawn_a_chunk_at_a_time_are_those_drawn_at_once():
    """Bit for bit, for every arrival kind, with a count, a duration or both; the bursty gamma with a short
    duration also takes the path where the first batch of draws falls short of the duration."""
    for kind, burstiness in (("poisson", 1.0), ("gamma", 0.05), ("gamma", 4.0), ("constant", 1.0)):
        for seed in range(12):
            for n, duration, rate in ((None, 10.0, 1.0), (None, 300.0, 50.0), (500, None, 50.0),
                                      (500, 3.0, 50.0), (1, None, 5.0), (0, None, 5.0)):
                process = ArrivalProcess(kind, rate, burstiness)
                at_once = process.offsets(np.random.default_rng([seed, 3]), n=n, duration=duration)
                parts = list(process.chunks(np.random.default_rng([seed, 3]), n=n, duration=duration, size=97))
                chunked = np.concatenate(parts) if parts else np.zeros(0)
                assert np.array_equal(at_once, chunked), (kind, burstiness, seed, n, duration)
    assert any(len(ArrivalProcess("gamma", 1.0, 0.05).offsets(np.random.default_rng([s, 3]), duration=10.0)) > 29
               for s in range(12))  # 0 and a first batch of 28 draws for 10 s at 1/s


def test_a_closed_loop_with_a_large_count_makes_a_bounded_number_before_the_clock():
    workload = LiveWorkload(L.parse("8"), L.parse("4"), 4096, seed=2)
    feed = shape_of(LoadPlan(concurrency=4, num_requests=200_000, seed=2)).prepare(workload)
    assert len(workload.made_ns) == CLOSED_AHEAD_MAX
    positions = [asyncio.run(feed())[0] for _ in range(CLOSED_AHEAD_MAX + 10)]  # later ones made as taken
    assert positions == list(range(CLOSED_AHEAD_MAX + 10)) and len(workload.made_ns) == CLOSED_AHEAD_MAX + 10


# Digests of (position, offset, every turn's index, lengths and prompt) for the first requests of each workload,
# computed from the code that made every prompt before the clock (main at 6dfe34f): the same seed gives the same
# requests at the same offsets now that they are made as the run goes.
GOLDEN = {
    "synthetic": (305, "b3165589634f20515ba85fde1f0b6df31104e0a9e6c439c303288220cce9665b"),
    "multiturn-prefix": (82, "c7c6c7ddd8a769bf6ab7b55a577f89a193ad96d9ecf938f2da9177b089087ca4"),
    "sharegpt-multi": (100, "4be1a51ad422419c39380f6dc5dd247eb83fd79e4d5569b255e0f75305b7618e"),
    "trace": (60, "7d4ee282628eba375764fdb71384c235c2b7470631a4d90a4232da6e8d7f5cdd"),
}


def _cases():
    data = ROOT / "scenarios" / "data"
    yield "synthetic", Workload(L.parse("lognormal:512,0.5"), L.parse("uniform:16,256"), 4096, seed=11), \
        LoadPlan(arrival=ArrivalProcess("poisson", 50.0), num_requests=300, warmup=5, seed=11)
    yield "multiturn-prefix", Workload(L.parse("64"), L.parse("16"), 4096, seed=4, turns=3, prefix_groups=2,
                                       prefix_len=32), \
        LoadPlan(arrival=ArrivalProcess("gamma", 20.0, 0.5), duration_s=5.0, seed=4)
    yield "sharegpt-multi", DatasetWorkload(load_dataset(data / "sharegpt-sample.json"), 4096, seed=2,
                                            multi_turn=True), \
        LoadPlan(arrival=ArrivalProcess("constant", 10.0), num_requests=100, seed=2)
    yield "trace", DatasetWorkload(load_dataset(data / "azure-trace-sample.csv"), 8192, seed=3), \
        LoadPlan(trace_time_scale=0.5, duration_s=30.0, seed=3)


def _digest(schedule: Schedule) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    while (item := schedule.take()) is not None:
        position, spec, offset = item
        schedule.make_ahead(offset)
        n += 1
        for x in spec.chain():
            h.update(f"{position}|{offset!r}|{x.index}|{x.conversation}|{x.turn}|{x.input_tokens}|{x.output_tokens}|"
                     f"{x.arrival_s!r}|{x.prompt}\n".encode())
    return n, h.hexdigest()


def test_the_same_seed_gives_the_requests_it_gave_when_all_were_made_up_front():
    for name, workload, plan in _cases():
        assert _digest(shape_of(plan).prepare(workload)) == GOLDEN[name], name


def test_workers_are_dealt_position_mod_n_from_the_one_stream():
    """What the parent pushes to worker k is exactly positions k, k + n, ... of the one-process schedule."""
    def build():
        return shape_of(LoadPlan(arrival=ArrivalProcess("poisson", 200.0), duration_s=3.0, seed=5)).prepare(
            Workload(L.parse("uniform:4,40"), L.parse("uniform:1,9"), 4096, seed=5))

    one = []
    schedule = build()
    while (item := schedule.take()) is not None:
        one.append(item)
    dealt: dict[int, list] = {0: [], 1: [], 2: []}
    ended: set[int] = set()
    schedule = build()
    shares = asyncio.run(shape_of(LoadPlan(arrival=ArrivalProcess("poisson", 200.0), duration_s=3.0)).deal(schedule,
                                                                                                           3))
    for k, share in enumerate(shares):
        dealt[k] += share.work

    def send(k, items):
        if items is None:
            ended.add(k)
        else:
            dealt[k] += items

    # An origin far in the past: everything is due, so push deals it all at once (no waiting in a test).
    asyncio.run(schedule.push(3, send, time.perf_counter_ns() - 3_600 * 10**9, lambda: False))
    assert ended == {0, 1, 2}
    key = lambda item: (item[0], item[1], item[2])  # noqa: E731
    for k in range(3):
        assert [key(i) for i in dealt[k]] == [key(i) for i in one[k::3]]


def test_a_run_makes_each_prompt_before_its_send_time_and_not_all_before_the_clock(start_sim):
    sim = start_sim("--model", "7b", "--gpus", "1", "--fixed-ttft", "5ms", "--fixed-itl", "1ms")
    workload = LiveWorkload(L.parse("fixed:32"), L.parse("fixed:4"), 4096, seed=3)
    plan = LoadPlan(arrival=ArrivalProcess("constant", 20.0), duration_s=5.0, timeout_s=30, seed=3)
    outcome = asyncio.run(run_load(Target(sim.url, "llama-2-7b", OpenAIProtocol("completions")), workload, plan,
                                   lambda r: None))
    records = sorted(outcome.records, key=lambda r: r.index)
    assert len(records) >= 100 and all(r.ok for r in records)  # 5 s at 20/s (101: the sum of 0.05s falls short)
    assert len(workload.made_ns) == len(records)  # none made that was not sent
    before_clock = sum(1 for t in workload.made_ns if t < outcome.origin_ns)
    assert AHEAD_MIN <= before_clock <= 20 * AHEAD_S + 1  # the first seconds' prompts, not the run's
    for made_ns, record in zip(workload.made_ns, records):
        assert made_ns <= outcome.origin_ns + record.scheduled_s * 1e9  # made before it was due


def test_a_timed_run_over_two_workers_sends_every_request_once(tmp_path, start_sim):
    """`--duration` with `--workers 2`: the requests and offsets of one process, each sent once (the server's
    own count agrees), dealt k mod 2."""
    sim = start_sim("--fixed-ttft", "5ms", "--fixed-itl", "1ms")
    common = ["--url", sim.url, "--qps", "40", "--duration", "4s", "--input-len", "uniform:8,64",
              "--output-len", "uniform:2,6", "--seed", "5", "--quiet"]
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        proc = run_loadgen("run", *common, "--workers", str(workers), "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        runs[workers] = read_requests(out)
    served = json.loads(urllib.request.urlopen(sim.url + "/sim/requests").read())["requests"]
    one, two = runs[1], runs[2]
    key = lambda r: (r["index"], round(r["scheduled_s"], 9), r["target_input_tokens"], r["target_output_tokens"])  # noqa: E731
    assert sorted(map(key, one)) == sorted(map(key, two))
    assert sorted(r["index"] for r in two) == list(range(len(two))) and len(two) > 100
    assert all(r["status"] == "ok" for r in two)
    assert len(served) == len(one) + len(two)
    assert Counter(r["worker"] for r in two) == {0: sum(1 for r in two if r["index"] % 2 == 0),
                                                 1: sum(1 for r in two if r["index"] % 2 == 1)}
    assert all(r["worker"] == r["index"] % 2 for r in two)
