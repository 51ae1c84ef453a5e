"""Locust integration: LLM metrics in Locust's statistics, charts, failures and CSV, from the same workload,
protocol and timing code as `loadgen run`.

Use it through `loadgen locust ...`, or as a plain locustfile: `locust -f <path of this file> --host URL`
(`loadgen locust --print-locustfile` prints the path). Each Locust process runs one asyncio event loop in a
real OS thread; a user's greenlet hands it `loadgen.client.send_request` and waits cooperatively, so requests
are timed exactly as in `loadgen run`. Every finished request becomes Locust entries of type LLM: `ttft`,
`tpot`, `itl` (one per inter-token gap) and `e2e` (which carries failures, with their reason). Records go to
the master (or the local runner), which writes requests.jsonl and, when the test stops, summary.json.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import sys
import time
import urllib.request
from dataclasses import asdict, replace
from pathlib import Path

import gevent
from gevent.event import AsyncResult
from gevent.monkey import get_original
from locust import User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from backends.registry import protocol_for
from loadgen.client import Target, make_session, send_request
from loadgen.config.assemble import build_workload
from loadgen.locust.options import add_locust_options, describe_workload, prompt_source, run_config
from loadgen.metrics import itl_ms, summarize, tpot_ms, ttft_ms
from loadgen.outputs.console import SIM_BANNER
from loadgen.records import RecordWriter, RequestRecord, read_records
from loadgen.run_json import RunJson
from loadgen.rundir import write_json
from loadgen.workload.prompts import HFTokenizer

RECORDS_MESSAGE = "loadgen_records"
log = logging.getLogger("loadgen.locust")
DEFAULT_MAX_CONTEXT = 4096  # what a plain `locust -f` run clips to without --loadgen-max-context
CANCEL_WAIT_S = 5.0  # a cancelled request returns its record at once; this only bounds a wedged one


class RequestFailed(Exception):
    """Carries a failed request's status and reason into Locust's failures tab."""


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    add_locust_options(parser)


class AsyncBridge:
    """One asyncio loop in a real OS thread per Locust process, shared by its users."""

    def __init__(self) -> None:
        try:  # libuv does its own I/O, out of reach of gevent's monkey-patched socket and selectors modules
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.origin_ns = time.perf_counter_ns()
        self.origin_wall = time.time()
        self.session = self.loop.run_until_complete(self._open())
        get_original("_thread", "start_new_thread")(self.loop.run_forever, ())
        self.hub = gevent.get_hub()

    @staticmethod
    async def _open():
        return make_session(0)

    def run(self, coro):
        """Run a coroutine on the loop; the calling greenlet yields until it is done. If the greenlet is killed
        meanwhile (Locust stopping its users), the coroutine is cancelled too, so no request outlives the test
        unseen, and what it returned on cancellation comes back in `Interrupted`."""
        result = AsyncResult()
        watcher = self.hub.loop.async_()
        task_box: list[asyncio.Task] = []

        def start() -> None:
            task = self.loop.create_task(coro)
            task_box.append(task)
            task.add_done_callback(lambda _: watcher.send())

        def deliver() -> None:
            task = task_box[0]
            if task.cancelled():
                result.set_exception(asyncio.CancelledError())
            elif task.exception() is not None:
                result.set_exception(task.exception())
            else:
                result.set(task.result())

        watcher.start(deliver)
        self.loop.call_soon_threadsafe(start)
        try:
            return result.get()
        except gevent.GreenletExit:
            self.loop.call_soon_threadsafe(lambda: task_box and task_box[0].cancel())
            try:
                value = result.get(timeout=CANCEL_WAIT_S)
            except BaseException:  # never started, or did not finish cancelling in time: nothing to record
                raise gevent.GreenletExit() from None
            raise Interrupted(value) from None
        finally:
            watcher.close()


class Interrupted(gevent.GreenletExit):
    """The greenlet was killed mid-request; `value` is what the cancelled coroutine returned."""

    def __init__(self, value) -> None:
        super().__init__()
        self.value = value


class State:
    """Per-process state: the bridge, the workload stream, and where records go."""

    def __init__(self, environment) -> None:
        o = environment.parsed_options
        config = run_config(environment)
        runner = environment.runner
        self.worker = getattr(runner, "worker_index", 0) if isinstance(runner, WorkerRunner) else 0
        self.bridge = AsyncBridge()
        tokenizer = HFTokenizer(config.workload.tokenizer) if config.workload.tokenizer else None
        mine = replace(config, workload=replace(config.workload, seed=config.workload.seed + 1000 * self.worker))
        self.workload = build_workload(mine, config.workload.max_context or DEFAULT_MAX_CONTEXT, tokenizer)
        self.specs = self.workload.specs()
        self.model = config.target.model
        self.protocol = protocol_for(config.target.endpoint or "completions", config.target.ignore_eos,
                                     backend=o.loadgen_backend)
        self.timeout = config.load.timeout
        self.count_tokens = tokenizer.count if tokenizer else None
        key = os.environ.get("OPENAI_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.pending: list[dict] = []


def _state(environment) -> State:
    if not hasattr(environment, "loadgen_state"):
        environment.loadgen_state = State(environment)
    return environment.loadgen_state


def _fire(environment, record: RequestRecord) -> None:
    fire = environment.events.request.fire
    length = record.output_tokens
    if record.ok:
        fire(request_type="LLM", name="ttft", response_time=ttft_ms(record), response_length=length,
             exception=None, context={})
        tpot = tpot_ms(record)
        if tpot is not None:
            fire(request_type="LLM", name="tpot", response_time=tpot, response_length=length, exception=None,
                 context={})
        for gap in itl_ms(record):
            fire(request_type="LLM", name="itl", response_time=gap, response_length=0, exception=None, context={})
    error = None if record.ok else RequestFailed(f"{record.status}: {record.error}")
    fire(request_type="LLM", name="e2e", response_time=(record.finished_s - record.sent_s) * 1e3,
         response_length=length, exception=error, context={})


class LLMUser(User):
    """A closed-loop user: sends the next request of the workload as soon as its last one finished."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.state = _state(self.environment)
        if self.state.model is None and self.state.protocol.endpoint in ("completions", "chat"):
            self.state.model = _first_model(self.host, self.state)

    @task
    def generate(self) -> None:
        st = self.state
        spec = next(st.specs)
        target = Target(self.host, st.model, st.protocol, st.headers, st.count_tokens)
        try:
            record = st.bridge.run(send_request(st.bridge.session, target, spec, st.bridge.origin_ns, "measured",
                                                None, st.timeout))
        except Interrupted as stopped:
            # Killed by Locust's stop with the request in flight: recorded as `cancelled`, as `loadgen run` does on
            # Ctrl-C, but not fired into Locust's statistics, which have no entry for a request that never ended;
            # one stopped before it was sent (None) is no record at all
            if stopped.value is not None:
                _deliver(self.environment, self._stamped(stopped.value))
            raise
        if record is None:
            return
        record = self._stamped(record)
        _fire(self.environment, record)
        _deliver(self.environment, record)

    def _stamped(self, record: RequestRecord) -> RequestRecord:
        """Times relative to this process's origin, shifted onto the wall clock so the master can merge workers."""
        record.worker = self.state.worker
        shift = self.state.bridge.origin_wall
        for attr in ("sent_s", "finished_s", "first_token_s"):
            value = getattr(record, attr)
            if value is not None:
                setattr(record, attr, value + shift)
        return record


def _first_model(host: str, st: State) -> str:
    async def get() -> str:
        async with st.bridge.session.get(host.rstrip("/") + "/v1/models", headers=st.headers) as resp:
            data = await resp.json(content_type=None)
            return data["data"][0]["id"]

    return st.bridge.run(get())


# -- records: workers -> master -> requests.jsonl -------------------------------------------------------
def _deliver(environment, record: RequestRecord) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        st = _state(environment)
        st.pending.append(asdict(record))
        if len(st.pending) >= 20:
            _flush(environment)
    else:
        _write(environment, [asdict(record)])


def _flush(environment) -> None:
    st = _state(environment)
    if st.pending:
        environment.runner.send_message(RECORDS_MESSAGE, st.pending)
        st.pending = []


def _write(environment, rows: list[dict]) -> None:
    writer = getattr(environment, "loadgen_writer", None)
    if writer is None:
        return
    for row in rows:
        row["index"] = environment.loadgen_count
        environment.loadgen_count += 1
        writer.write(RequestRecord.from_dict(row))


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    runner = environment.runner
    o = environment.parsed_options
    if isinstance(runner, WorkerRunner) or o is None:
        return
    if isinstance(runner, MasterRunner):
        runner.register_message(RECORDS_MESSAGE, lambda msg, **kw: _write(environment, msg.data))
        _stop_before_quit(runner)
    # asked here, before any test: in test_start the request yields to Locust's --run-time greenlet, which on a
    # busy machine ended a 2 s test (and wrote its summary) before run.json existed
    environment.loadgen_simulated = bool(o.loadgen_simulated) or _answers_as_the_sim(environment.host or o.host)
    if o.loadgen_run_dir:
        run_dir = Path(o.loadgen_run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        environment.loadgen_writer = RecordWriter(run_dir / "requests.jsonl")
        environment.loadgen_count = 0
    # `quit` fires once the runner has stopped every user (and a master has had its workers' last reports), which
    # `quitting` does not promise: on SIGTERM Locust fires `quitting` with users still running.
    environment.events.quit.add_listener(lambda **_kw: _finish(environment))


def _stop_before_quit(runner: MasterRunner) -> None:
    """A master's `quit` (what a headless --run-time ends with) tells its workers to quit and waits 0.5 s for their
    last records and statistics; on a busy machine they arrive later and are lost (seen: 222 requests on disk,
    126 in the stats). `stop` is a handshake instead: it waits until every worker answered `client_stopped`, which
    a worker sends after its last records and statistics (`_on_stop`), on the same socket. So a master stops its
    workers before it quits; when it has stopped already, `stop` does nothing."""
    quit_now = runner.quit

    def stop_then_quit() -> None:
        runner.stop()
        quit_now()

    runner.quit = stop_then_quit


def _answers_as_the_sim(host: str | None) -> bool:
    """Whether the target is dissect's simulated engine (it serves /sim/info), whatever the flags said."""
    if not host:
        return False
    try:
        with urllib.request.urlopen(host.rstrip("/") + "/sim/info", timeout=5) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("simulated") is True and "cost_model" in data


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    o = environment.parsed_options
    if environment.loadgen_simulated:
        log.warning(f"{SIM_BANNER} Target: {environment.host or o.host}")
    if getattr(environment, "loadgen_writer", None) is not None:  # run.json says "running" from the first request
        config = run_config(environment)
        environment.loadgen_run_json = RunJson(Path(o.loadgen_run_dir), {
            "backend": {"name": "locust", "url": environment.host or o.host,
                        "simulated": environment.loadgen_simulated},
            "model": config.target.model, "endpoint": config.target.endpoint or "completions",
            "scenario": config.scenario_name, "workload": describe_workload(config.workload),
            "slo_ms": config.slo.limits_ms,
            "load": {"mode": "closed", "generator": "locust", "users": o.num_users, "spawn_rate": o.spawn_rate,
                     "run_time": o.run_time}})


@events.test_stopping.add_listener
def _on_stopping(environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner):
        _flush(environment)


@events.test_stop.add_listener
def _on_stop(environment, **_kwargs) -> None:
    """After every user stopped: requests that finished (or were cancelled) during stopping go to the master, and
    so do their statistics. A worker answers the master's `stop` with `client_stopped` and no stats report (only
    `quit` sends one, and by then the master has dropped the worker), so the requests that ended since the last
    periodic report (every 3 s) were missing from the master's stats: 241 entries against 243 records. Sent
    here, before `client_stopped`, on the same socket, the report reaches the master first."""
    if isinstance(environment.runner, WorkerRunner):
        _flush(environment)
        environment.runner._send_stats()  # serialising resets the worker's entries: nothing is counted twice


@events.quitting.add_listener
def _on_quit(environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner):
        _flush(environment)


def _write_final_csv(environment) -> None:
    """Locust's --csv files are rewritten by a greenlet once a second and never after the last requests, so the
    stats CSV lags the console's final table (locustio/locust#1806: 190 ttft entries against 206 requests in a
    5 s run). Write them again from the final statistics; each file is replaced whole, so Locust's still-open
    handles (closed right after this) cannot write into the new one."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (("_stats.csv", writer.requests_csv), ("_failures.csv", writer.failures_csv),
                          ("_exceptions.csv", writer.exceptions_csv)):
        path = Path(prefix + suffix)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            write(csv.writer(f))
        os.replace(tmp, path)


def _finish(environment) -> None:
    """After the test: the final CSVs, then summary.json and run.json from requests.jsonl."""
    _write_final_csv(environment)
    simulated = bool(getattr(environment, "loadgen_simulated", environment.parsed_options.loadgen_simulated))
    if simulated:  # under Locust's final table, which cannot say it
        print(f"\n{SIM_BANNER} Every figure above is simulated.", file=sys.stderr, flush=True)
    writer = getattr(environment, "loadgen_writer", None)
    if writer is None:
        return
    writer.close()
    environment.loadgen_writer = None  # a record arriving after this (a worker's late batch) is not written
    o = environment.parsed_options
    config = run_config(environment)
    run_dir = Path(o.loadgen_run_dir)
    records = read_records(run_dir / "requests.jsonl")
    if records:  # onto the run's own timeline: the earliest send is t = 0
        t0 = min(r.sent_s for r in records)
        for r in records:
            r.sent_s -= t0
            r.finished_s -= t0
            if r.first_token_s is not None:
                r.first_token_s -= t0
    summary = summarize(records, config.slo.limits_ms, simulated=simulated)
    state = getattr(environment, "loadgen_state", None)  # a master of workers has no users, hence no state
    summary["prompt_source"] = state.workload.prompt_source if state else prompt_source(config)
    summary["load_generator"] = "locust"
    write_json(run_dir / "summary.json", summary)
    run_json = getattr(environment, "loadgen_run_json", None)
    if run_json is not None:
        run_json.ended("finished")

