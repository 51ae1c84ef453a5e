"""The console report: one table of latency percentiles, then throughput, goodput and accounting."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

SIM_BANNER = "SIMULATED: timings come from dissect's engine model, not from a real GPU."
COLUMNS = ("mean", "p50", "p90", "p95", "p99", "max")
METRICS = (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"), ("ITL", "itl_ms"), ("E2EL", "e2el_ms"))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def describe_run(run: dict) -> str:
    """One line of what was measured, from run.json: without it a 70B run on 8 GPUs reads like a 7B run on one."""
    backend = run.get("backend") or {}
    name = backend.get("name", "?")
    if backend.get("simulated"):
        where = f"{run.get('gpus') or '?'}x {run.get('gpu') or '?'} (SIMULATED)"
    elif backend.get("launch_command"):
        where = f"{run.get('gpus') or '?'} GPU(s), launched by loadgen"
    else:
        where = f"server at {backend.get('url', '?')} (GPUs not known to loadgen)"
    w = run.get("workload") or {}
    if w.get("source") == "dataset":
        what = f"dataset {Path(str(w.get('path', w.get('name', '?')))).name}"
    else:
        what = f"input {w.get('input_len', '?')} / output {w.get('output_len', '?')} tokens"
    if w.get("turns"):
        what += f", {w['turns']} turns"
    load = run.get("load") or {}
    if load.get("mode") == "closed":
        how = f"closed loop, {load.get('concurrency')} users"
    elif load.get("arrival") == "trace":
        how = f"trace replay x{load.get('time_scale') or 1:g}"
    else:
        how = f"{load.get('arrival', '?')} arrivals at {load.get('qps') or 0:g} req/s"
    if load.get("num_requests"):
        unit = "conversations" if w.get("turns") or w.get("multi_turn") else "requests"
        how += f", {load['num_requests']} {unit}" + (f" (+{load['warmup']} warm-up)" if load.get("warmup") else "")
    elif load.get("duration_s"):
        how += f", {load['duration_s']:g} s"
    return f"measured: {run.get('model', '?')} on {where}, backend {name}; workload {what}; load {how}"


def format_summary(summary: dict, run_dir: Path | None = None) -> str:
    lines: list[str] = []
    if run_dir is not None and (run_dir / "run.json").exists():
        import json

        lines.append(describe_run(json.loads((run_dir / "run.json").read_text())))
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
