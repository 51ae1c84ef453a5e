"""Self-contained HTML reports (plots embedded as PNG data URIs; no network needed to open them)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from loadgen.errors import LoadgenError
from loadgen.metrics import e2el_ms, itl_ms, tpot_ms, ttft_ms
from loadgen.outputs import plots, timeseries
from loadgen.outputs.compare import (
    RunData,
    Side,
    as_sides,
    comparison_rows,
    format_headers,
    format_rows,
    load_run,
    method_notes,
    summary_lines,
)
from loadgen.outputs.console import COLUMNS, METRICS
from loadgen.pace import RATE_TOLERANCE, judge, kept_up, pace
from loadgen.records import RequestRecord, read_records
from loadgen.telemetry.gpu import read_gpu_samples
from loadgen.telemetry.server_metrics import read_server_metrics

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1280px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.k,th.k{text-align:left}.banner{background:#b00020;color:#fff;padding:8px 12px;
font-weight:bold;border-radius:4px}.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0}
.grid img{max-width:620px;border:1px solid #eee}figcaption{font-size:12px;color:#555}.warn{color:#8a4b00}code{font-size:12px;word-break:break-all}
"""
SIM_BANNER = ("SIMULATED: every timing on this page comes from dissect's engine model "
              "(--backend sim), not from a real GPU.")


def _img(png: bytes, alt: str, save_to: Path | None = None) -> str:
    if save_to is not None:
        save_to.write_bytes(png)
    data = base64.b64encode(png).decode()
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _kv_table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f'<tr><td class="k">{html.escape(str(k))}</td><td class="k"><code>{html.escape(_text(v))}</code>'
                   f"</td></tr>" for k, v in rows if v not in (None, "", [], {}))
    return f"<table>{body}</table>"


def _text(v: object) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:,.4g}"
    return str(v)


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f'<th class="{"k" if i == 0 else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"k" if i == 0 else ""}">{html.escape(_text(c))}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, simulated: bool, body: str) -> str:
    banner = f'<p class="banner">{SIM_BANNER}</p>' if simulated else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{banner}<h1>{html.escape(title)}</h1>{body}{banner}</body></html>")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.2f}"


def summary_section(summary: dict) -> str:
    rows = [[label, summary[key]["count"], *(_fmt(summary[key][c]) for c in COLUMNS)] for label, key in METRICS]
    out = _table(["metric (ms)", "n", *COLUMNS], rows)
    t, req = summary["throughput"], summary["requests"]
    facts: list[tuple[str, object]] = [
        ("requests", f"{req['completed']} completed, {req['failed']} failed, {req['timed_out']} timed out, "
                     f"{req['cancelled']} cancelled, {req.get('warmup', 0)} warm-up"),
        ("errors by kind", req["errors_by_kind"]),
        ("window", f"{summary['window_s']:.2f} s"),
        ("throughput", f"{_fmt(t['requests_per_s'])} req/s, {_fmt(t['output_tokens_per_s'])} output tok/s, "
                       f"{_fmt(t['total_tokens_per_s'])} total tok/s"),
        ("goodput", summary.get("goodput")),
        ("keeping up", kept_up(summary["pace"])[1] if summary.get("pace") else None),
        ("send lateness (ms)", summary.get("lateness_ms")),
        ("prompt lengths", summary.get("prompt_source")),
        ("energy", summary.get("energy")),
        ("server metrics (scraped)", summary.get("server_metrics")),
    ]
    err = (summary.get("client_timing_error") or {}).get("ttft_error_ms") or {}
    if err.get("count"):
        facts.append(("client TTFT error vs server ground truth",
                      f"p50 {err['p50']:.3f} ms, p99 {err['p99']:.3f} ms, max {err['max']:.3f} ms"))
    out += _kv_table(facts)
    for w in summary.get("warnings", []):
        out += f'<p class="warn">warning: {html.escape(w)}</p>'
    return out


def config_section(run: dict) -> str:
    env = run.get("environment") or {}
    backend = run.get("backend") or {}
    return _kv_table([
        ("status", run.get("status")), ("started", run.get("started_at")), ("finished", run.get("finished_at")),
        ("backend", backend.get("name")), ("url", backend.get("url")),
        ("launch command", " ".join(backend.get("launch_command") or []) or None),
        ("ready after (s)", backend.get("ready_after_s")), ("model", run.get("model")),
        ("GPU", f"{run.get('gpus')} x {run.get('gpu')}" if run.get("gpu") else None),
        ("scenario", run.get("scenario")), ("endpoint", run.get("path")), ("forced output length", run.get("ignore_eos")),
        ("workload", run.get("workload")), ("load", run.get("load")), ("SLO (ms)", run.get("slo_ms")),
        ("sim engine", backend.get("sim")), ("tool", f"{env.get('tool')} {env.get('tool_version')} ({env.get('git_sha')})"),
        ("host", f"{env.get('hostname')}, {env.get('cpu_count')} CPUs, {env.get('platform')}, Python {env.get('python')}"),
        ("command", " ".join(env.get("command") or [])),
    ])


def run_report(run_dir: Path, data: RunData, records: list[RequestRecord]) -> str:
    sim = data.simulated
    measured = [r for r in records if r.phase == "measured"]
    ok = [r for r in measured if r.ok]
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    figs = [
        _img(plots.cdf({"TTFT": [v for r in ok if (v := ttft_ms(r)) is not None]}, "ms", "TTFT distribution", sim),
             "TTFT distribution", plot_dir / "ttft_cdf.png"),
        _img(plots.cdf({"TPOT": [v for r in ok if (v := tpot_ms(r)) is not None]}, "ms", "TPOT distribution", sim),
             "TPOT distribution", plot_dir / "tpot_cdf.png"),
        _img(plots.cdf({"ITL": [g for r in ok for g in itl_ms(r)]}, "ms", "Inter-token latency distribution", sim),
             "Inter-token latency distribution", plot_dir / "itl_cdf.png"),
        _img(plots.cdf({"E2EL": [e2el_ms(r) for r in ok]}, "ms", "End-to-end latency distribution", sim),
             "End-to-end latency distribution", plot_dir / "e2el_cdf.png"),
    ]
    width = timeseries.auto_width(records)
    edges = timeseries.bin_edges(records, width)
    mids = (edges[:-1] + edges[1:]) / 2
    sent = np.array([r.sent_s for r in ok])
    figs.append(_img(plots.timeline(mids, {}, "ms", "Latency over time (by send time)", sim, scatter={
        "TTFT": (sent, np.array([ttft_ms(r) for r in ok])), "E2EL": (sent, np.array([e2el_ms(r) for r in ok]))}),
        "Latency over time", plot_dir / "latency_time.png"))
    figs.append(_img(plots.timeline(mids, {"offered": timeseries.offered_rate(records, edges),
                                           "achieved (completed)": timeseries.achieved_rate(records, edges)},
                                    "requests/s", f"Offered and achieved rate ({width:g} s bins)", sim),
                     "Offered and achieved rate", plot_dir / "rates.png"))
    figs.append(_img(plots.timeline(mids, {"in flight": timeseries.in_flight(records, mids)}, "requests",
                                    "Requests in flight", sim), "Requests in flight", plot_dir / "in_flight.png"))
    figs.append(_img(plots.timeline(mids, {"output tokens/s": timeseries.output_token_rate(records, edges)},
                                    "tokens/s", f"Output-token throughput ({width:g} s bins)", sim),
                     "Output-token throughput", plot_dir / "tokens_time.png"))
    server = _server_metrics(run_dir / "server_metrics.jsonl", data.run.get("origin_perf_counter_ns"))
    if server:
        figs.append(_img(plots.timeline(server[0], server[1], "value", "Server metrics (scraped)", sim),
                         "Server metrics", plot_dir / "server_metrics.png"))
    gpu = read_gpu_samples(run_dir / "gpu.jsonl", data.run.get("origin_perf_counter_ns"))
    if gpu:
        for key, label in (("power_w", "W"), ("util_pct", "%"), ("mem_used_mib", "MiB")):
            by_gpu: dict[str, list] = {}
            for s in gpu:
                by_gpu.setdefault(f"GPU {s['gpu']}", []).append((s["t_s"], s[key]))
            lines = {k: np.array([v for _, v in pts]) for k, pts in by_gpu.items()}
            x = np.array([t for t, _ in next(iter(by_gpu.values()))])
            figs.append(_img(plots.timeline(x, lines, label, f"GPU {key} (NVML)", False), f"GPU {key}",
                             plot_dir / f"gpu_{key}.png"))
    title = f"loadgen run {run_dir.name}"
    body = ("<h2>Configuration and environment</h2>" + config_section(data.run) + "<h2>Summary</h2>"
            + summary_section(data.summary) + '<h2>Plots</h2><div class="grid">' + "".join(figs) + "</div>")
    return _page(title, sim, body)


def _server_metrics(path: Path, origin_ns: int | None) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """Queue depth and KV-cache use from server_metrics.jsonl (the scraped /metrics), over time."""
    from loadgen.telemetry.server_metrics import GAUGES

    rows = read_server_metrics(path, origin_ns)
    if not rows:
        return None
    wanted = {n for names in GAUGES.values() for n in names}
    names = sorted({k for r in rows for k in r.get("values", {}) if k.split("{")[0] in wanted})
    if not names:
        return None
    x = np.array([r["t_s"] for r in rows])
    return x, {n: np.array([r["values"].get(n, np.nan) for r in rows]) for n in names}


def _with_pace(sweep_dir: Path, point: dict) -> dict:
    """A point of a sweep written before "pace" was recorded gets it from its own requests.jsonl."""
    if "pace" in point:
        return point
    path = sweep_dir / Path(point.get("run_dir", "")).name / "requests.jsonl"
    return {**point, "pace": pace(read_records(path))} if path.is_file() else point


def sweep_report(sweep_dir: Path, sweep: dict) -> str:
    from loadgen.sweep import SWEEP_HEADERS, point_order, sweep_rows

    sim = bool(sweep.get("simulated"))
    fraction, tolerance = sweep.get("slo_fraction", 0.9), sweep.get("rate_tolerance", RATE_TOLERANCE)
    points = sorted((_with_pace(sweep_dir, p) for p in sweep["points"]), key=point_order)
    verdicts = [judge(p, fraction, tolerance) for p in points]
    # the load axis is the open-loop rate when the sweep has open-loop points (closed-loop points of a mixed sweep
    # are in the table and the throughput-axis plots), else the number of users
    by_qps = any(p.get("qps") is not None for p in points)
    on_axis = [(p, v) for p, v in zip(points, verdicts) if (p.get("qps") is not None) == by_qps]
    x = [p["qps"] if by_qps else p["concurrency"] for p, _ in on_axis]
    xlabel = "offered load (requests/s)" if by_qps else "concurrency (users)"
    search = sweep.get("search") or {}
    mark = search.get("highest_meeting")
    if mark is None:
        meeting = [xv for xv, (_, v) in zip(x, on_axis) if v.meets]
        mark = max(meeting) if meeting and len(meeting) < len(on_axis) else None
    label = "saturation" if mark is not None else ""
    plot_dir = sweep_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    tput = [p["throughput"]["output_tokens_per_s"] for p in points]
    tput_on_axis = [p["throughput"]["output_tokens_per_s"] for p, _ in on_axis]

    def pct(metric: str, q: str) -> list:
        return [(p.get(metric) or {}).get(q) for p in points]

    figs = [
        _img(plots.sweep_curves(x, {"output tok/s": tput_on_axis}, xlabel, "output tokens/s", "Throughput vs load",
                                sim, mark, label), "Throughput vs load", plot_dir / "throughput.png"),
        _img(plots.sweep_curves(tput, {"TTFT p50": pct("ttft_ms", "p50"), "TTFT p99": pct("ttft_ms", "p99")},
                                "output tokens/s", "ms", "TTFT vs throughput", sim), "TTFT vs throughput",
             plot_dir / "ttft_throughput.png"),
        _img(plots.sweep_curves(tput, {"TPOT p50": pct("tpot_ms", "p50"), "TPOT p99": pct("tpot_ms", "p99")},
                                "output tokens/s", "ms", "TPOT vs throughput", sim), "TPOT vs throughput",
             plot_dir / "tpot_throughput.png"),
        _img(plots.sweep_curves(x, {"goodput req/s": [(p.get("goodput") or {}).get("requests_per_s")
                                                      for p, _ in on_axis],
                                    "achieved req/s": [p["throughput"]["requests_per_s"] for p, _ in on_axis]},
                                xlabel, "requests/s", "Goodput vs load", sim, mark, label,
                                failing=[not v.meets for _, v in on_axis]),
             "Goodput vs load (crossed: the point fails the SLO, the server falling behind included)",
             plot_dir / "goodput.png"),
    ]
    body = _table(SWEEP_HEADERS, sweep_rows([{"label": p["label"], "summary": p} for p in points], fraction, tolerance))
    criteria = (f"a point meets the SLO when at least {fraction:.0%} of its requests met every limit and the server "
                f"kept up: while the requests arrived it completed at least {1 - tolerance:.0%} of their rate")
    if search:
        body += _kv_table([("saturation search", {k: search.get(k) for k in (
            "slo", "saturation_rate", "achieved_rate", "bounded_by", "bound_at", "bound_reasons", "slo_fraction",
            "rate_tolerance", "highest_meeting", "lowest_failing", "converged")})])
    elif mark is not None:
        body += f"<p>saturation: highest load that met the SLO: {mark:g}</p>"
    body += f"<p>{html.escape(criteria[0].upper() + criteria[1:])}.</p>"
    fails = [(p["label"], v) for p, v in zip(points, verdicts) if not v.meets]
    if fails:
        body += "<ul>" + "".join(f'<li class="warn">{html.escape(label)} fails: {html.escape("; ".join(v.reasons))}</li>'
                                 for label, v in fails) + "</ul>"
    body += '<h2>Plots</h2><div class="grid">' + "".join(figs) + "</div>"
    body += "<h2>Points</h2><ul>" + "".join(f"<li><code>{html.escape(p['run_dir'])}</code></li>" for p in points) + "</ul>"
    return _page(f"loadgen sweep {sweep_dir.name}", sim, body)


def compare_report(items: Sequence[RunData | Side], diffs: list[str]) -> str:
    sides = as_sides(items)
    sim = any(s.simulated for s in sides)
    rows = comparison_rows(sides)
    body = ""
    if diffs:
        body += "".join(f'<p class="warn">forced comparison: {html.escape(d)}</p>' for d in diffs)
    body += "<p>Relative differences are against the first side.</p>"
    body += "".join(f"<p>{html.escape(s.name)}: {html.escape(', '.join(r.name for r in s.runs))}</p>"
                    for s in sides if len(s.runs) > 1)
    body += _table(format_headers(sides), format_rows(sides, rows))
    body += "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(sides, rows)) + "</ul>"
    body += "".join(f"<p>{html.escape(note)}</p>" for note in method_notes(sides))
    records = {s.name: [x for r in s.runs for x in r.records() if x.phase == "measured" and x.ok] for s in sides}
    figs = []
    for label, fn in (("TTFT", ttft_ms), ("TPOT", tpot_ms), ("E2EL", e2el_ms)):
        series = {name: [v for x in recs if (v := fn(x)) is not None] for name, recs in records.items()}
        figs.append(_img(plots.cdf(series, "ms", f"{label} distribution", sim), f"{label} distribution"))
    series = {name: [g for x in recs for g in itl_ms(x)] for name, recs in records.items()}
    figs.append(_img(plots.cdf(series, "ms", "ITL distribution", sim), "ITL distribution"))
    body += '<h2>Overlaid distributions</h2><div class="grid">' + "".join(figs) + "</div>"
    return _page("loadgen compare: " + " vs ".join(s.name for s in sides), sim, body)


def write_report(path: Path) -> Path:
    """report.html (and plots/*.png) for a run or a sweep directory."""
    if (path / "sweep.json").exists():
        text = sweep_report(path, json.loads((path / "sweep.json").read_text()))
    elif (path / "summary.json").exists():
        data = load_run(path)
        text = run_report(path, data, data.records())
    else:
        raise LoadgenError(f"{path} holds neither a run (summary.json) nor a sweep (sweep.json); give a directory "
                           "that `loadgen run` or `loadgen sweep` wrote")
    out = path / "report.html"
    out.write_text(text, encoding="utf-8")
    return out
