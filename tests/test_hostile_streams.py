"""Streams that break the wire format fail the request with a reason; streams that follow the SSE spec in any of
its legal forms are measured right. Against tests/fault_server.py (raw asyncio: every byte is the test's), each
request's mode chosen by its URL (`/fault/<mode>/v1/...`), and every record checked against the server's own
count of requests received (sent == records)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from backends.protocols.native import TGIStreamParser
from backends.protocols.openai import OpenAIProtocol, OpenAIStreamParser
from backends.protocols.sse import LineReader, LineTooLong
from conftest import ROOT, read_requests
from loadgen.client import Target, make_session, send_request
from loadgen.records import RequestRecord
from loadgen.workload.specs import RequestSpec

TOKENS = 4


@pytest.fixture(scope="module")
def fault_server():
    from conftest import FaultServerProcess

    # a gap between tokens that a busy machine cannot hide: the first token's stamp must fall before the
    # second token was even written
    server = FaultServerProcess("--tokens", str(TOKENS), "--itl", "0.15", "--oversized-mib", "64")
    yield server
    server.stop()


def fetch(server, mode: str, endpoint: str = "completions", idle_timeout_s: float | None = None,
          count_tokens=None) -> RequestRecord:
    """One request through the real client, to `mode`; asserts the server received exactly one request."""
    before = server.log()["served"]

    async def go() -> RequestRecord:
        async with make_session(0) as session:
            target = Target(f"{server.url}/fault/{mode}", "fault-model", OpenAIProtocol(endpoint),
                            count_tokens=count_tokens)
            return await send_request(session, target, RequestSpec(0, "p", 1, TOKENS), 0, "measured", None, 60,
                                      idle_timeout_s)

    record = asyncio.run(go())
    assert server.log()["served"] - before == 1, "sent != records"
    return record


def first_token_written(server, mode: str) -> tuple[int, int]:
    stamps = [s for s in server.log()["first_tokens"] if s["mode"] == mode][-1]
    return stamps["first_ns"], stamps["second_ns"]


VALID = ["ok", "close", "crlf", "cr", "fragmented", "multiline", "bom", "fields"]


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
@pytest.mark.parametrize("mode", VALID)
def test_every_legal_form_of_sse_is_measured_and_timed_at_its_first_token(fault_server, mode, endpoint):
    record = fetch(fault_server, mode, endpoint)
    assert record.status == "ok", record.error
    assert record.output_tokens == TOKENS and record.output_tokens_source == "usage"
    assert len(record.token_times_ms) == TOKENS and record.chunk_tokens is None  # every token, one each
    first_ns, second_ns = first_token_written(fault_server, mode)
    # origin 0: first_token_s is the client's perf_counter_ns stamp, the server's clock (CLOCK_MONOTONIC)
    assert first_ns <= record.first_token_s * 1e9 < second_ns  # the first token's arrival, not the second's


def test_a_final_chunk_with_empty_text_and_usage_is_not_a_token(fault_server):
    record = fetch(fault_server, "usagetail")
    assert record.status == "ok" and record.output_tokens == TOKENS and record.output_tokens_source == "usage"
    assert len(record.token_times_ms) == TOKENS and record.chunk_tokens is None  # not a 5th chunk "carrying 4"


@pytest.mark.parametrize("mode, reason", [
    ("twojson", "malformed SSE data"),
    ("brackets", "malformed SSE data"),
    ("badutf8", "invalid UTF-8"),
    ("badshape", "unexpected SSE event shape"),
    ("malformed", "malformed SSE data"),
    ("truncated", "stream ended before [DONE]"),
    ("cut", "connection closed mid-stream"),
    ("resetmid", "connection closed mid-stream"),
])
def test_a_stream_that_breaks_the_wire_format_fails_with_its_reason(fault_server, mode, reason):
    record = fetch(fault_server, mode)
    assert record.status == "error:stream" and reason in record.error
    assert len(record.error) < 200
    assert record.http_status == 200 and record.first_token_s is not None  # what arrived is kept for inspection


def test_the_reason_names_the_line(fault_server):
    record = fetch(fault_server, "twojson")
    assert '{"id":"cmpl-fault","choices":[{"text":" a"}]}{' in record.error


@pytest.mark.parametrize("mode, message", [
    ("json200", "the model is overloaded, try again later"),
    ("html200", "502 Bad Gateway"),
])
def test_a_200_that_is_not_a_stream_keeps_the_servers_message(fault_server, mode, message):
    record = fetch(fault_server, mode)
    assert record.status == "error:stream" and record.http_status == 200
    assert message in record.error and "not an event stream" in record.error
    assert len(record.error) < 300  # the message, not the whole page


@pytest.mark.parametrize("mode, code", [("redirect301", 301), ("redirect302", 302), ("redirect307", 307),
                                        ("redirect308", 308)])
def test_redirects_are_recorded_with_their_location_and_not_followed(fault_server, mode, code):
    record = fetch(fault_server, mode)  # fetch asserts the server saw one request: the redirect was not followed
    assert record.status == "error:http" and record.http_status == code
    origin = "http://localhost:" if code == 307 else ""
    assert f"HTTP {code} redirect to {origin}" in record.error and "/fault/ok/v1/completions" in record.error


def test_an_oversized_line_fails_the_request_with_memory_flat(fault_server):
    tracemalloc.start()
    try:
        record = fetch(fault_server, "oversized")  # 64 MiB without a newline
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record.status == "error:stream" and record.error == "line over 1 MiB"
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading one line"


def test_stalls_and_resets_are_recorded(fault_server):
    stalled = fetch(fault_server, "stallmid", idle_timeout_s=0.5)
    assert stalled.status == "timeout" and stalled.error.startswith("idle")
    assert len(stalled.token_times_ms) == TOKENS // 2
    reset = fetch(fault_server, "reset")
    assert reset.status == "error:connection" and reset.http_status is None


# ---- the parts, on crafted bytes ----

def test_line_reader_ends_lines_at_lf_cr_and_crlf_across_reads():
    reader = LineReader()
    reads = [b"\xef", b"\xbb\xbfdata: a\r", b"\ndata: b\rdata: c\n\r", b"\n", b"tail"]
    lines = [line for data in reads for line in reader.feed(data)]
    assert lines == [b"data: a", b"data: b", b"data: c", b""] and reader.rest() == b"tail"


def test_line_reader_gives_the_same_lines_however_the_reads_fall():
    stream = (b"\xef\xbb\xbfdata: a\r\ndata: b\r\rdata: c\n\n: ping\rid: 1\r\ndata: " + b"z" * 5000
              + b"\r\n\r\ndata: [DONE]\n\ntail")
    whole = LineReader()
    want = whole.feed(stream), whole.rest()
    rng = random.Random(0)
    for _ in range(500):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 60)))
        reader = LineReader()
        lines = [line for a, b in zip([0, *cuts], [*cuts, len(stream)]) for line in reader.feed(stream[a:b])]
        assert (lines, reader.rest()) == want, cuts


def test_line_reader_bounds_one_line():
    reader = LineReader(max_line=1000)
    reader.feed(b"x" * 600)
    with pytest.raises(LineTooLong, match="line over 1000 bytes"):
        reader.feed(b"x" * 600)
    with pytest.raises(LineTooLong):  # a whole over-long line in one read, too
        LineReader(max_line=1000).feed(b"y" * 1200 + b"\nok\n")


def test_multi_line_data_is_joined_with_newlines():
    p = OpenAIStreamParser(collect_text=True)
    assert p.feed(b'data: {"id": "m", "choices":') == 0 and p.feed(b'data: [{"text": "hi"}]}') == 0
    assert p.feed(b"") == 1 and p.text == ["hi"] and p.error is None
    assert p.feed(b'data: {"choices":[{"text":"a"}]}') == 1
    assert p.feed(b'data: {"choices":[{"text":"b"}]}') == 0  # a second value in the same event
    assert p.error.startswith("two JSON values in one SSE event")


@pytest.mark.parametrize("line", [b'data: {"choices":[{"text":5}]}', b'data: {"choices":[1]}',
                                  b'data: {"choices":[],"usage":[]}', b"data: [1, 2]"])
def test_every_event_is_checked_not_only_the_first(line):
    p = OpenAIStreamParser()
    assert p.feed(b'data: {"id":"x","choices":[{"text":"a"}]}') == 1 and p.feed(b"") == 0
    assert p.feed(line) + p.feed(b"") == 0 and p.error


def test_native_parsers_check_every_event_too():
    p = TGIStreamParser()
    assert p.feed(b'data:{"token":{"id":1,"text":"a","special":false}}') + p.feed(b"") == 1
    p.feed(b'data:{"token":"oops"}')
    p.feed(b"")
    assert p.error.startswith("unexpected SSE event shape")


# ---- loadgen run, end to end ----

def _run(tmp_path: Path, server_args: list[str], *args: str) -> tuple[int, str, float, int]:
    """loadgen run against a fault server of one mode: exit code, stderr, loadgen's peak RSS (MiB) and the
    number of requests the server received."""
    from conftest import FaultServerProcess

    server = FaultServerProcess(*server_args)
    try:
        with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "loadgen", "run", "--url", server.url, "--qps", "20",
                                     "--output", str(tmp_path / "run"), "--quiet", *args],
                                    cwd=ROOT, stdout=stdout, stderr=stderr)
            # loadgen's own high-water mark (VmHWM starts afresh at exec; ru_maxrss does not: a child forked from a
            # pytest process that had grown to 246 MiB in the full suite reported that), read until it exits
            peak_kib = 0
            while proc.poll() is None:
                try:
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    peak_kib = max(peak_kib, int(status.split("VmHWM:")[1].split()[0]))
                except (OSError, IndexError, ValueError):
                    pass
                time.sleep(0.02)
        served = server.log()["served"]
    finally:
        server.stop()
    return proc.returncode, (tmp_path / "stderr").read_text(), peak_kib / 1024, served


def _records(tmp_path: Path) -> list[dict]:
    return read_requests(tmp_path / "run")


@pytest.mark.parametrize("mode, status", [("bom", "ok"), ("cr", "ok"), ("usagetail", "ok"),
                                          ("twojson", "error:stream"), ("json200", "error:stream"),
                                          ("redirect307", "error:http")])
def test_loadgen_run_records_every_mode(tmp_path, mode, status):
    """Each mode alternating with a plain good stream (the mix cycles through ok, mode): 3 of each."""
    code, stderr, _, served = _run(tmp_path, ["--mix", f"ok:1,{mode}:1", "--tokens", str(TOKENS)],
                                   "--num-requests", "6")
    assert code == 0 and "Traceback" not in stderr, stderr
    records = _records(tmp_path)
    assert len(records) == served == 6  # sent == records: no redirect followed, nothing lost
    statuses = sorted(r["status"] for r in records)
    assert statuses == sorted(["ok"] * 3 + [status] * 3)
    ok = [r for r in records if r["status"] == "ok"]
    assert all(len(r["token_times_ms"]) == TOKENS and r["output_tokens"] == TOKENS for r in ok)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["requests"]
    assert summary["total"] == 6 and summary["completed"] == len(ok)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"


def test_loadgen_run_against_an_oversized_line_keeps_memory_flat(tmp_path):
    """256 MiB without a newline to each of 3 requests: loadgen's peak resident memory stays far below one."""
    code, stderr, peak_mib, served = _run(tmp_path, ["--mix", "oversized", "--oversized-mib", "256"],
                                          "--num-requests", "3")
    assert code == 1 and "every request failed (3 of 3" in stderr and "Traceback" not in stderr, stderr
    records = _records(tmp_path)
    assert len(records) == served == 3
    assert all(r["status"] == "error:stream" and r["error"] == "line over 1 MiB" for r in records)
    print(f"loadgen peak RSS {peak_mib:.1f} MiB with 3 requests answered by 256 MiB lines")
    assert peak_mib < 200, f"loadgen peaked at {peak_mib:.0f} MiB reading 256 MiB lines"


def test_a_redirects_location_is_recorded_without_credentials():
    from loadgen.client import _without_credentials

    assert _without_credentials("http://user:sk-SECRET@other:8000/v1/completions") == "http://other:8000/v1/completions"
    assert _without_credentials("/v1/completions") == "/v1/completions"


def test_a_request_stopped_before_its_bytes_left_is_no_record():
    """The README: a request that was never sent is not a record. Through a session of one connection to a server
    that accepts and never answers, the first request's body is written and the second waits for the connection;
    cancelled, the first is `cancelled` and the second, never sent, returns None."""
    import asyncio
    import socket

    from backends.protocols.openai import OpenAIProtocol
    from loadgen.client import Target, make_session, send_request
    from loadgen.workload.specs import RequestSpec

    async def go():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)  # the kernel accepts into the backlog; nothing ever answers
        target = Target(f"http://127.0.0.1:{lsock.getsockname()[1]}", "m", OpenAIProtocol())
        try:
            async with make_session(1) as session:
                tasks = [asyncio.create_task(send_request(session, target, RequestSpec(i, "p", 1, 4), 0, "measured",
                                                          None, 60)) for i in range(2)]
                await asyncio.sleep(1.0)
                for t in tasks:
                    t.cancel()
                return await asyncio.gather(*tasks)
        finally:
            lsock.close()

    sent, unsent = asyncio.run(go())
    assert sent is not None and sent.status == "cancelled" and sent.http_status is None
    assert unsent is None
