"""Keeping up with an open-loop load, the combined SLO verdict, point sizing and the search summary, on
hand-made records (no server)."""

import pytest

from loadgen.metrics import summarize
from loadgen.pace import judge, kept_up, pace
from loadgen.records import RequestRecord
from loadgen.sweep import POINT_S, WARMUP_S, point_size, saturation, saturation_text, sweep_table


def rec(i, sent, finished, phase="measured", scheduled=True, status="ok", first=None):
    return RequestRecord(index=i, phase=phase, status=status, sent_s=sent, finished_s=finished,
                         scheduled_s=sent if scheduled else None, first_token_s=sent + 0.05 if first is None else first,
                         output_tokens=8, token_times_ms=[50.0 + 10 * k for k in range(8)])


def steady(rate=10.0, seconds=30.0, latency=1.0, start=0.0, phase="measured", first_index=0):
    n = int(rate * seconds)
    return [rec(first_index + i, start + i / rate, start + i / rate + latency, phase) for i in range(n)]


def fifo(rate, service_per_s, seconds, start=0.0):
    """Arrivals at `rate`, served one after another at `service_per_s`: the queue grows by the difference."""
    out, free = [], start
    for i in range(int(rate * seconds)):
        sent = start + i / rate
        free = max(free, sent) + 1 / service_per_s
        out.append(rec(i, sent, free))
    return out


def test_a_steady_server_keeps_up():
    p = pace(steady(rate=10, seconds=30, latency=1.0))
    # by hand: 10 arrivals and 10 completions a second from the first finish (1.0 s) on; 10 in flight throughout
    assert p["first_latency_s"] == pytest.approx(1.0) and p["fit_from_s"] == pytest.approx(1.0)
    assert p["offered_per_s"] == pytest.approx(10, rel=0.01) and p["achieved_per_s"] == pytest.approx(10, rel=0.01)
    assert p["in_flight_start"] == pytest.approx(10, abs=1) and p["in_flight_end"] == pytest.approx(10, abs=1)
    ok, why = kept_up(p)
    assert ok is True and why.startswith("the server kept up")


def test_a_point_that_meets_the_slo_fraction_while_falling_behind_fails():
    # 20 req/s offered, 10 req/s served: the queue grows by 10 a second, yet every request meets ttft:60s
    records = fifo(rate=20, service_per_s=10, seconds=30)
    s = summarize(records, {"ttft": 60_000})
    assert s["goodput"]["fraction"] == 1.0
    p = s["pace"]
    assert p["offered_per_s"] == pytest.approx(20, rel=0.02) and p["achieved_per_s"] == pytest.approx(10, rel=0.02)
    assert p["in_flight_end"] - p["in_flight_start"] == pytest.approx(10 * 27, rel=0.1)  # 10/s over ~27 s
    v = judge(s, 0.9)
    assert not v.meets and v.slo_met is True and v.kept_up is False and v.failed == ["fell behind"]
    assert len(v.reasons) == 1 and "fell behind" in v.reasons[0] and "20 req/s arrived" in v.reasons[0]
    assert any("fell behind" in w for w in s["warnings"])  # `loadgen run` says so too


def test_the_issue_case_a_batch_absorbing_a_short_burst_is_not_a_pass():
    # 100 requests within 0.1 s, all admitted at once and finished about 3 s later: the SLO holds for all,
    # but nothing shows whether the server could sustain 1,000 req/s
    records = [rec(i, i / 1000, 2.9 + i / 1000) for i in range(100)]
    s = summarize(records, {"ttft": 1000})
    v = judge(s, 0.9)
    assert v.slo_met is True and not v.meets and v.failed == ["too short"]
    assert "too short to tell" in v.reasons[0] and "100 requests" in v.reasons[0]


def test_falling_behind_shows_even_in_a_short_run():
    # 5 s at 40 req/s against 20 req/s of service: the first finish comes after 50 ms, the queue grows 100
    v = judge(summarize(fifo(rate=40, service_per_s=20, seconds=5), {"ttft": 60_000}), 0.9)
    assert v.kept_up is False and not v.meets


def test_tolerance_and_noise_floor():
    # served at 96% of the offered rate for a minute: the queue grows by ~24 requests
    records = fifo(rate=10, service_per_s=9.6, seconds=60)
    p = pace(records)
    assert p["achieved_per_s"] / p["offered_per_s"] == pytest.approx(0.96, abs=0.01)
    assert kept_up(p, 0.05)[0] is True and kept_up(p, 0.03)[0] is False
    # at 1 req/s the last 8 requests taking 8 s instead of 1 s is a 14% shortfall but under 4 requests of queue,
    # within 3 standard deviations of an in-flight count near 1
    few = steady(rate=1, seconds=30, latency=1.0)
    few[22:] = [rec(i, float(i), i + 8.0) for i in range(22, 30)]
    p = pace(few)
    assert 1 - p["achieved_per_s"] / p["offered_per_s"] > 0.1
    assert kept_up(p, 0.05)[0] is True
    few[18:] = [rec(i, float(i), i + 8.0) for i in range(18, 30)]  # 12 of them: more than noise
    assert kept_up(pace(few), 0.05)[0] is False


def test_warmup_requests_count_in_the_queue_not_in_the_offered_rate():
    records = steady(rate=10, seconds=5, latency=1.0, phase="warmup") + \
        steady(rate=10, seconds=30, latency=1.0, start=5.0, first_index=50)
    p = pace(records)
    assert p["requests"] == 300 and p["fit_from_s"] == pytest.approx(6.0)
    assert p["in_flight_start"] == pytest.approx(10, abs=1) and p["offered_per_s"] == pytest.approx(10, rel=0.01)


def test_closed_loop_and_missing_pace_are_judged_on_the_slo_alone():
    closed = [rec(i, i * 1.0, i * 1.0 + 0.9, scheduled=False) for i in range(20)]
    s = summarize(closed, {"ttft": 1000})
    assert s["pace"] is None
    v = judge(s, 0.9)
    assert v.meets and v.kept_up is None and v.reasons == ()
    old = {k: v for k, v in summarize(fifo(40, 20, 5), {"ttft": 60_000}).items() if k != "pace"}
    assert judge(old, 0.9).meets  # written before pace was recorded: the SLO fraction alone
    bad = summarize(closed, {"ttft": 10})
    v = judge(bad, 0.9)
    assert not v.meets and v.failed == ["slo"] and "only 0% of requests met ttft:10ms (needs 90%)" in v.reasons


def test_point_size_by_time_unless_given():
    size = point_size(30.0, None, None, None, None, batch=256)
    assert size.num_requests == int(30 * POINT_S) and size.warmup == int(30 * WARMUP_S) and size.warning is None
    assert point_size(0.5, None, None, None, None).num_requests == 15
    short = point_size(1024.0, None, 100, None, None, batch=256)
    assert (short.num_requests, short.warmup) == (100, 0)
    assert "0.0977 s" in short.warning and "batch of 256" in short.warning and "drop --num-requests" in short.warning
    assert point_size(1.0, None, 100, None, 5).warning is None  # 100 s of arrivals
    assert "too short" in point_size(10.0, None, None, 20.0, 50).warning  # 20 s - 5 s of warm-up
    closed = point_size(None, 16, None, None, None)
    assert (closed.num_requests, closed.duration_s, closed.warmup) == (None, POINT_S + WARMUP_S, 16)


def _summary(records, slo=None):
    return summarize(records, slo or {"ttft": 60_000})


def test_saturation_says_which_criterion_bounded_it():
    good, behind = _summary(steady(10, 30, 1.0)), _summary(fifo(20, 10, 30))
    found = {10.0: {"summary": good, "verdict": judge(good, 0.9).to_json()},
             20.0: {"summary": behind, "verdict": judge(behind, 0.9).to_json()}}
    result = saturation({"highest_meeting": 10.0, "lowest_failing": 20.0}, found)
    assert result["saturation_rate"] == 10 and result["achieved_rate"] == pytest.approx(10, rel=0.01)
    assert result["bounded_by"] == ["fell behind"] and result["bound_at"] == 20
    text = saturation_text(result, "ttft:60s", 0.9, 0.05)
    assert "10 req/s offered (10 req/s completed) is the highest rate where 90% of requests met ttft:60s and the " \
        "server kept up (within 5%)" in text
    assert "bounded by: at 20 req/s the server fell behind" in text
    top = saturation({"highest_meeting": 10.0, "lowest_failing": None}, {10.0: found[10.0]})
    assert top["bounded_by"] == ["max_qps"] and "--max-qps" in saturation_text(top, "ttft:60s", 0.9, 0.05)
    points = [{"label": "qps 10", "summary": good}, {"label": "qps 20", "summary": behind}]
    table = sweep_table(points, True, 0.9, 0.05)
    assert "kept up" in table.splitlines()[1] and "qps 20 fails: the server fell behind" in table
    assert "yes (+0%)" in table and "no (-50%)" in table
    assert "qps 10 fails" not in table


def test_sweep_progress_says_how_long_each_point_and_the_rest_will_send():
    from loadgen.sweep import PointSize, point_size, progress_line, sending_seconds

    by_time = point_size(4.0, None, None, None, None)  # 30 s of arrivals after 5 s of warm-up
    assert sending_seconds(by_time, 4.0) == pytest.approx(35.0)
    counted = PointSize(200, None, 0)
    assert sending_seconds(counted, 8.0) == pytest.approx(25.0)
    assert sending_seconds(PointSize(None, 35.0, 16), None) == 35.0
    assert sending_seconds(PointSize(64, None, 0), None) is None  # a closed loop by count: the server's pace
    assert progress_line(2, 5, "qps 4", 35.0, 3 * 35.0) == ("point 2/5 (qps 4): sends for about 35 s; "
                                                            "about 2.3 min left")
    assert progress_line(3, None, "qps 16", 35.0) == "search point 3 (qps 16): sends for about 35 s"
    assert "as long as the server takes" in progress_line(1, 1, "concurrency 8", None)
    assert progress_line(5, 5, "qps 8", 25.0, 0.0).endswith("about 25 s left")
