"""The client's own timing error, from a server that reports ground truth (the simulated engine does).

Both sides stamp with CLOCK_MONOTONIC on the same host, so the client's TTFT minus the server's
(first token written - request received) is the time the client adds: transport plus its own delays.
"""

from __future__ import annotations

from typing import Iterable

from loadgen.metrics import distribution, ttft_ms
from loadgen.records import RequestRecord


def timing_error(records: Iterable[RequestRecord], ground_truth: Iterable[dict], origin_ns: int) -> dict:
    truth = {g["id"]: g for g in ground_truth if g.get("first_token_ns") and g.get("finished_ns")}
    ttft_err, e2el_err, transit = [], [], []
    for r in records:
        g = truth.get(r.response_id or "")
        if r.phase != "measured" or not r.ok or g is None:
            continue
        server_ttft = (g["first_token_ns"] - g["received_ns"]) / 1e6
        server_e2el = (g["finished_ns"] - g["received_ns"]) / 1e6
        ttft_err.append(ttft_ms(r) - server_ttft)  # type: ignore[operator]
        e2el_err.append((r.finished_s - r.sent_s) * 1e3 - server_e2el)
        transit.append((g["received_ns"] - origin_ns) / 1e6 - r.sent_s * 1e3)
    return {
        "matched_requests": len(ttft_err),
        "ttft_error_ms": distribution(ttft_err),
        "e2el_error_ms": distribution(e2el_err),
        "send_to_server_receive_ms": distribution(transit),
        "definition": "client-measured minus server ground truth (same host, CLOCK_MONOTONIC)",
    }
