"""CPU per streamed event of the client's stream reading (bytes -> lines -> parsed, checked events), the work
loadgen does for every chunk on the load path, outside any network: what the client-accuracy figures rest on.

    python benchmarks/stream_parser.py --output results/cpu-stream-parser.json

Each stream is 20,000 vLLM-shaped completion chunks (one per network read, as a server's writes arrive), in
the forms a server may send: LF, CRLF, CR line ends; with continuous usage in every chunk; chat deltas. The
figure is the best of --repeats runs (the least disturbed by other work on the machine), in microseconds per
event. A speed of this machine, measured here and never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.protocols.openai import OpenAIStreamParser  # noqa: E402
from backends.protocols.sse import LineReader  # noqa: E402

EVENTS = 20_000


def _completion(i: int, usage: bool) -> bytes:
    chunk = {"id": "cmpl-4f1c2a9e", "object": "text_completion", "created": 1700000000, "model": "llama-7b",
             "choices": [{"index": 0, "text": f" tok{i}", "logprobs": None, "finish_reason": None,
                          "stop_reason": None}],
             "usage": {"prompt_tokens": 256, "completion_tokens": i + 1, "total_tokens": 257 + i} if usage else None}
    return json.dumps(chunk, separators=(",", ":")).encode()


def _chat(i: int, usage: bool) -> bytes:
    chunk = {"id": "chatcmpl-4f1c2a9e", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "llama-7b", "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "logprobs": None,
                                               "finish_reason": None}]}
    return json.dumps(chunk, separators=(",", ":")).encode()


def stream(make, usage: bool, end: bytes) -> list[bytes]:
    reads = [b"data: " + make(i, usage) + end + end for i in range(EVENTS)]
    return reads + [b"data: [DONE]" + end + end]


def read_all(reads: list[bytes]) -> int:
    parser, reader, tokens = OpenAIStreamParser(), LineReader(), 0
    for data in reads:
        for line in reader.feed(data):
            tokens += parser.feed(line)
    assert parser.done and parser.error is None and tokens == EVENTS, (tokens, parser.error)
    return tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="runs per stream; the best is kept (default 7)")
    p.add_argument("--output", "--out", dest="output", required=True, help="JSON file for the results")
    args = p.parse_args()
    streams = {
        "completions, LF": stream(_completion, False, b"\n"),
        "completions, CRLF": stream(_completion, False, b"\r\n"),
        "completions, CR": stream(_completion, False, b"\r"),
        "completions, continuous usage": stream(_completion, True, b"\n"),
        "chat, LF": stream(_chat, False, b"\n"),
    }
    rows = []
    for name, reads in streams.items():
        best = float("inf")
        for _ in range(args.repeats):
            start = time.process_time()
            read_all(reads)
            best = min(best, time.process_time() - start)
        rows.append({"stream": name, "events": EVENTS, "bytes_per_event": len(reads[0]),
                     "us_per_event": round(best / EVENTS * 1e6, 3)})
    print(tabulate([[r["stream"], r["events"], r["bytes_per_event"], f'{r["us_per_event"]:.2f}'] for r in rows],
                   headers=["stream", "events", "bytes/event", "µs/event (best of %d)" % args.repeats]))
    Path(args.output).write_text(json.dumps({"host": platform.node(), "python": platform.python_version(),
                                             "rows": rows}, indent=2) + "\n")
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()
