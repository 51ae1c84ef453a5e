import pytest

from loadgen.metrics import distribution, e2el_ms, itl_ms, meets_slo, summarize, tpot_ms, ttft_ms
from loadgen.records import RequestRecord


def rec(index, sent, first, finished, out, times=(), status="ok", phase="measured", scheduled=None, inp=10):
    return RequestRecord(
        index=index, phase=phase, status=status, sent_s=sent, finished_s=finished, first_token_s=first,
        output_tokens=out, input_tokens=inp, token_times_ms=list(times), scheduled_s=scheduled,
    )


def test_single_request_metrics_by_hand():
    # sent at 1.0 s, first token 1.1 s, tokens at +100, +120, +150 ms, finished 1.15 s, 3 tokens
    r = rec(0, 1.0, 1.1, 1.15, 3, times=[100, 120, 150])
    assert ttft_ms(r) == pytest.approx(100)
    assert e2el_ms(r) == pytest.approx(150)
    assert tpot_ms(r) == pytest.approx(25)  # (1150 - 1100) / (3 - 1)
    assert itl_ms(r) == pytest.approx([20, 30])


def test_one_token_output_has_no_tpot_or_itl():
    r = rec(0, 0.0, 0.2, 0.2, 1, times=[200])
    assert tpot_ms(r) is None and itl_ms(r) == []
    s = summarize([r])
    assert s["tpot_ms"]["count"] == 0 and s["tpot_ms"]["p50"] is None and s["itl_ms"]["count"] == 0
    assert s["ttft_ms"]["p50"] == pytest.approx(200)


def test_distribution_percentiles_linear_interpolation():
    d = distribution([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert d["count"] == 10 and d["mean"] == 5.5 and d["min"] == 1 and d["max"] == 10
    assert d["p50"] == pytest.approx(5.5)
    assert d["p90"] == pytest.approx(9.1)  # rank 0.9 * 9 = 8.1 -> 9 + 0.1 * (10 - 9)
    assert d["p99"] == pytest.approx(9.91)
    assert d["p999"] == pytest.approx(9.991)
    assert d["std"] == pytest.approx(2.8722813)
    assert distribution([])["p99"] is None


def test_summary_counts_throughput_goodput_and_lateness():
    records = [
        rec(0, 0.0, 0.1, 1.0, 10, times=[100 + 100 * i for i in range(10)], scheduled=0.0, phase="warmup"),
        rec(1, 1.0, 1.2, 2.0, 5, times=[200, 400, 600, 800, 1000], scheduled=0.999),  # ttft 200, tpot 200
        rec(2, 2.0, 2.05, 3.0, 20, times=[50 + 50 * i for i in range(20)], scheduled=1.998),  # ttft 50, tpot 50
        rec(3, 2.5, None, 2.6, 0, status="error:http", scheduled=2.5),
        rec(4, 3.0, None, 5.0, 0, status="timeout", scheduled=2.996),
    ]
    s = summarize(records, slo={"ttft": 100.0, "tpot": 100.0}, simulated=True)
    req = s["requests"]
    assert (req["total"], req["completed"], req["failed"], req["timed_out"], req["warmup"]) == (4, 2, 1, 1, 1)
    assert req["errors_by_kind"] == {"error:http": 1}
    # window: first measured send 1.0 -> last measured finish 5.0
    assert s["window_s"] == pytest.approx(4.0)
    assert s["throughput"]["requests_per_s"] == pytest.approx(0.5)
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx(25 / 4)
    assert s["throughput"]["total_tokens_per_s"] == pytest.approx((25 + 20) / 4)
    assert s["ttft_ms"]["mean"] == pytest.approx(125)
    assert s["tpot_ms"]["max"] == pytest.approx(200)
    # only request 2 meets ttft<=100 and tpot<=100; failures count against the fraction
    assert s["goodput"]["good_requests"] == 1
    assert s["goodput"]["fraction"] == pytest.approx(1 / 4)
    assert s["goodput"]["requests_per_s"] == pytest.approx(0.25)
    assert s["lateness_ms"]["max"] == pytest.approx(4.0)
    assert s["simulated"] is True
    assert any("did not complete" in w for w in s["warnings"])


def test_lateness_warning_when_client_falls_behind():
    records = [rec(i, i + 0.05, i + 0.1, i + 0.2, 2, times=[50, 100], scheduled=float(i)) for i in range(10)]
    s = summarize(records)
    assert s["lateness_ms"]["p99"] == pytest.approx(50)
    assert any("fell behind" in w for w in s["warnings"])


def test_slo_rules():
    one_token = rec(0, 0.0, 0.05, 0.05, 1, times=[50])
    assert meets_slo(one_token, {"ttft": 100, "tpot": 1})  # no decode step: TPOT limit does not apply
    assert not meets_slo(one_token, {"ttft": 10})
    assert not meets_slo(rec(1, 0, None, 1, 0, status="error:http"), {"e2el": 1e9})
    slow_gap = rec(2, 0.0, 0.01, 0.5, 3, times=[10, 20, 500])
    assert not meets_slo(slow_gap, {"itl": 100}) and meets_slo(slow_gap, {"itl": 500})


def test_client_cpu_warning_names_the_client_as_bottleneck():
    from loadgen.metrics import client_cpu_warning

    assert client_cpu_warning(0.5, 1.0) is None
    assert client_cpu_warning(0.0, 0.0) is None
    w = client_cpu_warning(0.97, 1.0)
    assert w and "97% of a CPU core" in w and "bottleneck" in w


def _counted(inp, target, n=4):
    return [RequestRecord(index=i, phase="measured", status="ok", sent_s=0.0, finished_s=1.0, first_token_s=0.5,
                          output_tokens=2, input_tokens=inp, input_tokens_source="usage", target_input_tokens=target,
                          token_times_ms=[500.0, 1000.0]) for i in range(n)]


def test_the_servers_own_prompt_count_is_compared_with_the_one_asked_for():
    s = summarize(_counted(950, 512))
    assert s["tokens"]["input_counted"] == {"requests": 4, "server_total": 3800, "target_total": 2048,
                                            "ratio": 3800 / 2048}
    assert any("counted 1.86x the prompt tokens asked for (950 vs 512 per request)" in w for w in s["warnings"])
    # a chat template's few tokens, or a BOS, are no mismatch; nor is a short prompt's template overhead
    for inp, target in ((513, 512), (530, 512), (40, 16)):
        assert not any("prompt tokens asked" in w for w in summarize(_counted(inp, target))["warnings"])
    # a count from the target itself is no evidence
    target_only = [r for r in _counted(950, 512)]
    for r in target_only:
        r.input_tokens_source = "target"
    assert summarize(target_only)["tokens"]["input_counted"] is None
