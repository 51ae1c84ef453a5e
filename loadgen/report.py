"""The console report: one table of latency percentiles, then throughput, goodput and accounting."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

SIM_BANNER = "SIMULATED: timings come from dissect's engine model, not from a real GPU."
COLUMNS = ("mean", "p50", "p90", "p95", "p99", "max")
METRICS = (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"), ("ITL", "itl_ms"), ("E2EL", "e2el_ms"))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_summary(summary: dict, run_dir: Path | None = None) -> str:
    lines: list[str] = []
    if summary.get("simulated"):
        lines.append(SIM_BANNER)
        if summary.get("sim_cost_model"):
            lines.append(f"sim cost model: {summary['sim_cost_model']}")
    rows = []
    for label, key in METRICS:
        d = summary[key]
        rows.append([f"{label} (ms)", d["count"], *(_fmt(d[c]) for c in COLUMNS)])
    lines.append(tabulate(rows, headers=["metric", "n", *COLUMNS], tablefmt="simple", disable_numparse=True))
    t, req = summary["throughput"], summary["requests"]
    lines.append("")
    lines.append(
        f"requests: {req['completed']} completed, {req['failed']} failed, {req['timed_out']} timed out, "
        f"{req['cancelled']} cancelled" + (f" (+{req['warmup']} warm-up)" if req.get("warmup") else "")
    )
    for kind, n in req["errors_by_kind"].items():
        lines.append(f"  {kind}: {n} ({n / req['total']:.1%})")
    lines.append(
        f"throughput over {summary['window_s']:.2f} s: {_fmt(t['requests_per_s'])} req/s, "
        f"{_fmt(t['output_tokens_per_s'], 1)} output tok/s, {_fmt(t['total_tokens_per_s'], 1)} total tok/s"
    )
    if summary.get("goodput"):
        g = summary["goodput"]
        slo = ", ".join(f"{k}<={v:g}ms" for k, v in g["slo_ms"].items())
        frac = "-" if g["fraction"] is None else f"{g['fraction']:.1%}"
        lines.append(f"goodput ({slo}): {_fmt(g['requests_per_s'])} req/s, {frac} of requests met the SLO")
    if summary.get("lateness_ms"):
        late = summary["lateness_ms"]
        lines.append(f"send lateness: p50 {late['p50']:.3f} ms, p99 {late['p99']:.3f} ms, max {late['max']:.3f} ms")
    if summary.get("client_timing_error"):
        e = summary["client_timing_error"]["ttft_error_ms"]
        if e["count"]:
            lines.append(
                f"client TTFT error vs server ground truth: p50 {e['p50']:.3f} ms, p99 {e['p99']:.3f} ms"
            )
    server = summary.get("server_metrics") or {}
    if server.get("server_ttft_ms"):
        st = server["server_ttft_ms"]
        lines.append(f"server's own TTFT ({st['metric']}, {st['requests']:g} requests): mean {_fmt(st['mean'], 1)} ms, "
                     f"p50 ~{_fmt(st['p50'], 1)} ms (histogram buckets)")
    if server.get("running") or server.get("kv_cache_usage"):
        parts = [f"{label} mean {server[label]['mean']:.2f} max {server[label]['max']:.2f}"
                 for label in ("running", "waiting", "kv_cache_usage") if server.get(label)]
        lines.append(f"server ({server['scrapes']} scrapes): " + ", ".join(parts))
    if server.get("prefix_cache"):
        pc = server["prefix_cache"]
        lines.append(f"server prefix cache: {pc['hit_rate']:.1%} of {pc['queried_tokens']:g} prompt tokens were hits")
    for w in summary.get("warnings", []):
        lines.append(f"WARNING: {w}")
    if run_dir is not None:
        lines.append(f"results: {run_dir}")
    return "\n".join(lines)
