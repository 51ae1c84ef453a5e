"""Per-step timing from inside vLLM's engine core, for checking the simulated engine's step pipeline against the real
one (benchmarks/vllm_serving.py --step-trace DIR puts this folder first on the server's PYTHONPATH).

Python imports `sitecustomize` at start-up in every process whose path holds this folder; only a process that
imports vLLM's engine core and has DISSECT_STEP_TRACE set is touched. There, the engine core's scheduler and model
executor are wrapped so that each step records, on time.perf_counter() (CLOCK_MONOTONIC, shared with the client):
when scheduling began and ended, when the launch (execute_model, then sample_tokens) returned, how long the engine
waited for the step's output, and when it finished processing that output; plus the step's size (requests, tokens,
new requests). One JSON line per step in DISSECT_STEP_TRACE.<pid>.jsonl, written 64 steps at a time so the tracing
itself costs microseconds per step. A measurement tool, not part of dissect's runtime.
"""

from __future__ import annotations

import atexit
import importlib.abc
import json
import os
import sys
import time

_TARGET = "vllm.v1.engine.core"


def _install(core_module) -> None:
    path = os.environ["DISSECT_STEP_TRACE"]
    buffer: list[dict] = []

    def flush() -> None:
        # opened by the process that writes (the engine core may be forked from the process that imported this)
        if buffer:
            with open(f"{path}.{os.getpid()}.jsonl", "a") as sink:
                sink.write("".join(json.dumps(r) + "\n" for r in buffer))
            buffer.clear()

    atexit.register(flush)
    clock = time.perf_counter
    steps: dict[int, dict] = {}  # id(scheduler_output) -> its record, until its output is processed
    engine_class = core_module.EngineCore
    original_init = engine_class.__init__

    def traced_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        scheduler, executor = self.scheduler, self.model_executor
        schedule, update = scheduler.schedule, scheduler.update_from_output
        execute, sample = executor.execute_model, executor.sample_tokens
        last = {"output": None}

        def traced_schedule(*a, **k):
            t0 = clock()
            out = schedule(*a, **k)
            tokens = dict(out.num_scheduled_tokens)
            new = [r.req_id for r in out.scheduled_new_reqs]
            steps[id(out)] = {"schedule": [t0, clock()], "requests": len(tokens),
                              "tokens": out.total_num_scheduled_tokens,
                              "new_requests": len(new), "new_tokens": sum(tokens.get(r, 0) for r in new),
                              "multi_token_requests": sum(1 for n in tokens.values() if n > 1)}
            last["output"] = out
            return out

        def traced_execute(scheduler_output, *a, **k):
            t0 = clock()
            out = execute(scheduler_output, *a, **k)
            rec = steps.get(id(scheduler_output))
            if rec is not None:
                rec["execute"] = [t0, clock()]
            return out

        def traced_sample(*a, **k):
            t0 = clock()
            fut = sample(*a, **k)
            rec = steps.get(id(last["output"]))
            if rec is not None:
                rec["sample"] = [t0, clock()]
                wait = fut.result

                def traced_result(*ra, **rk):
                    w0 = clock()
                    value = wait(*ra, **rk)
                    rec.setdefault("wait", [w0, clock()])
                    return value

                fut.result = traced_result
            return fut

        def traced_update(scheduler_output, *a, **k):
            t0 = clock()
            out = update(scheduler_output, *a, **k)
            rec = steps.pop(id(scheduler_output), None)
            if rec is not None:
                rec["update"] = [t0, clock()]
                buffer.append(rec)
                if len(buffer) >= 64:
                    flush()
            return out

        scheduler.schedule, scheduler.update_from_output = traced_schedule, traced_update
        executor.execute_model, executor.sample_tokens = traced_execute, traced_sample

    engine_class.__init__ = traced_init


class _Hook(importlib.abc.MetaPathFinder):
    """Runs _install right after vLLM's engine core module has been executed."""

    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_install(module):
            exec_module(module)
            try:
                _install(module)
            except Exception as exc:  # never take the server down for a measurement
                print(f"dissect step trace not installed: {exc!r}", file=sys.stderr)

        spec.loader.exec_module = exec_and_install
        return spec


if os.environ.get("DISSECT_STEP_TRACE"):
    sys.meta_path.insert(0, _Hook())
