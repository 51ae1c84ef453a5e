"""The engine-core step tracer (benchmarks/vllm_step_trace) against a stand-in vLLM engine core with the same
method names: it must hook the module on import, time each step's phases, and write one line per step."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FAKE_CORE = '''
import time
from concurrent.futures import Future
from types import SimpleNamespace

class Scheduler:
    def __init__(self):
        self.n = 0
    def schedule(self):
        self.n += 1
        new = [SimpleNamespace(req_id="new%d" % self.n)] if self.n % 2 else []
        tokens = {"old": 1, **({"new%d" % self.n: 512} if new else {})}
        return SimpleNamespace(num_scheduled_tokens=tokens, total_num_scheduled_tokens=sum(tokens.values()),
                               scheduled_new_reqs=new)
    def update_from_output(self, scheduler_output, model_output):
        time.sleep(0.001)
        return {}

class Executor:
    def execute_model(self, scheduler_output, non_block=False):
        time.sleep(0.003)
        f = Future(); f.set_result(None); return f
    def sample_tokens(self, grammar_output, non_block=False):
        f = Future()
        def result(timeout=None):
            time.sleep(0.002)
            return "out"
        f.result = result
        return f

class EngineCore:
    def __init__(self):
        self.scheduler, self.model_executor = Scheduler(), Executor()
    def step(self):
        out = self.scheduler.schedule()
        self.model_executor.execute_model(out, non_block=True)
        fut = self.model_executor.sample_tokens(None, non_block=True)
        self.scheduler.update_from_output(out, fut.result())
'''


def test_tracer_times_each_step_of_the_engine_core(tmp_path):
    pkg = tmp_path / "site" / "vllm" / "v1" / "engine"
    pkg.mkdir(parents=True)
    for d in (pkg.parent.parent, pkg.parent, pkg):
        (d / "__init__.py").write_text("")
    (pkg / "core.py").write_text(FAKE_CORE)
    trace = tmp_path / "steps"
    env = {**os.environ, "DISSECT_STEP_TRACE": str(trace),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks" / "vllm_step_trace"), str(tmp_path / "site")])}
    script = textwrap.dedent("""
        from vllm.v1.engine.core import EngineCore
        core = EngineCore()
        for _ in range(5):
            core.step()
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    files = list(tmp_path.glob("steps.*.jsonl"))
    assert len(files) == 1
    steps = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert len(steps) == 5
    first, second = steps[0], steps[1]
    assert first["requests"] == 2 and first["tokens"] == 513 and first["new_requests"] == 1
    assert first["new_tokens"] == 512 and first["multi_token_requests"] == 1
    assert second["new_requests"] == 0 and second["tokens"] == 1
    for s in steps:
        assert s["schedule"][0] <= s["schedule"][1] <= s["execute"][0] < s["execute"][1] <= s["sample"][0]
        assert s["execute"][1] - s["execute"][0] >= 0.003  # the stand-in's launch
        assert s["wait"][1] - s["wait"][0] >= 0.002  # its wait for the output
        assert s["wait"][1] <= s["update"][0] < s["update"][1]


def test_tracer_leaves_other_processes_alone(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks" / "vllm_step_trace")}
    env.pop("DISSECT_STEP_TRACE", None)
    proc = subprocess.run([sys.executable, "-c", "import sys; print(any(type(f).__name__ == '_Hook' "
                                                 "for f in sys.meta_path))"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False"


def test_report_reads_launch_wait_and_gpu_time_by_hand():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from step_trace_report import summarize_steps

    def step(sched, launch_end, wait, update, tokens, multi):
        return {"schedule": [sched, sched + 0.001], "execute": [sched + 0.001, launch_end - 0.0005],
                "sample": [launch_end - 0.0005, launch_end], "wait": wait, "update": update, "requests": 2,
                "tokens": tokens, "multi_token_requests": multi, "new_requests": multi, "new_tokens": 0}

    # vLLM's order: launch step k+1, wait for step k, process it. Decode steps of 6 ms GPU launched in 3 ms, then
    # a 513-token step whose 20 ms launch outlasts the GPU's work (no wait left: its GPU time is not readable).
    steps = [step(0.0000, 0.0030, [0.0060, 0.0070], [0.0070, 0.0075], 2, 0),
             step(0.0030, 0.0060, [0.0105, 0.0130], [0.0130, 0.0135], 2, 0),
             step(0.0075, 0.0105, [0.0335, 0.0335], [0.0335, 0.0340], 2, 0),
             step(0.0135, 0.0335, [0.0340, 0.0340], [0.0340, 0.0345], 513, 1)]
    rows = {r["kind"]: r for r in summarize_steps(steps)}
    decode, eager = rows["decode only"], rows["off the graph"]
    assert decode["steps"] == 3 and decode["launch_ms"] == 3.0 and decode["output_ms"] == 0.5
    assert decode["gpu_ms"] == 6.0 and decode["gpu_readable_steps"] == 1  # step 2: 13 - max(7, 4) ms
    assert eager["launch_ms"] == 20.0 and eager["wait_ms"] == 0.0 and eager["gpu_ms"] is None


def test_launch_fits_are_means_by_sequences_without_warm_up(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from step_trace_report import launch_fits, write_csv

    def step(t, launch, requests, update=0.0002):
        return {"schedule": [t, t + 0.0005], "execute": [t + 0.0005, t + launch - 0.0001], "sample": [t + launch - 0.0001, t + launch],
                "wait": [t + launch, t + launch + 0.001], "update": [t + 0.01, t + 0.01 + update], "requests": requests,
                "tokens": requests, "multi_token_requests": 0, "new_requests": 0, "new_tokens": 0}

    # launch = 2.8 ms + 0.1 ms per sequence; a 0.5 s launch (a warm-up compile) is left out
    steps = [step(1.0, 0.0030, 2), step(1.1, 0.0032, 4), step(1.2, 0.0030, 2, update=0.0004), step(0.5, 0.5, 3)]
    fit = launch_fits(steps)["decode only"]
    assert fit["steps"] == 3 and fit["launch_intercept_ms"] == 2.8 and fit["launch_per_sequence_ms"] == 0.1
    assert fit["mean_launch_ms"] == 3.067 and fit["mean_output_ms"] == 0.267
    path = tmp_path / "steps.csv.gz"
    write_csv(steps, path)
    import gzip

    lines = gzip.open(path, "rt").read().splitlines()
    assert len(lines) == 5 and lines[0].startswith("schedule_start_s,") and lines[1].startswith("0.50000,")
