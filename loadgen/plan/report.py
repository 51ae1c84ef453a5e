"""A plan's outputs: the ranked table, the infeasible configurations grouped by reason, JSON, and an HTML page with a
cost-versus-latency Pareto plot. Every predicted figure is labelled SIMULATED / predicted."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict

from tabulate import tabulate

from loadgen.plan.planner import PlannedConfig, PlanResult

LABEL = "SIMULATED: predicted by dissect's simulated engine (virtual-time replay), not measured"


def _money(x: float | None) -> str:
    return "n/a" if x is None else f"${x:.3f}"


def _headroom(c: PlannedConfig) -> str:
    return " ".join(f"{k.upper()} {v:+.0%}" for k, v in c.headroom.items())


def _preempt(c: PlannedConfig) -> str:
    m = c.memory
    return f"> {m.preemption_above_seqs}" if m.preemption_above_seqs is not None else f"never ({m.fits_at_full_length} fit)"


def header(result: PlanResult) -> list[str]:
    r = result.request
    target = f"target {r.target_rate:g} req/s" if r.target_rate is not None else "no target rate (each fully loaded)"
    return [
        LABEL,
        (f"model {r.model.name}; workload: {r.workload.description}"
         + ("" if r.workload.burstiness == 1.0 else f", gamma arrivals (burstiness {r.workload.burstiness:g})")
         + f"; SLO {r.slo.text()} and keeping up; {target}; at most {r.space.max_gpus} GPUs"),
        (f"searched {len(result.configs)} configurations ({len(result.feasible)} feasible) = "
        f"{result.engines_simulated} engines simulated x replica counts; {result.replays} replays, "
        f"{result.requests_simulated:,} simulated requests in {result.wall_s:.1f} s wall, {result.cpu_s:.1f} s CPU"),
        (f"prices per GPU-hour: {r.price_source}; chunked prefill always on (the sim models vLLM V1's scheduler); "
         "replicas scale the rate linearly (random routing splits Poisson arrivals)"),
    ]


def merged(result: PlanResult) -> list[tuple[PlannedConfig, list[int], list[int]]]:
    """The ranked list with deployments that differ only in engine settings the load never reached (the same
    predictions to the last digit) shown as one row: (first such configuration, its max_num_seqs, its token
    budgets)."""
    rows: dict[tuple, tuple[PlannedConfig, list[int], list[int]]] = {}
    for c in result.feasible:
        e, s = c.candidate.engine, c.scores
        key = (e.gpu, e.tp, c.candidate.replicas, s.max_rate_per_s, s.goodput_per_s, tuple(c.headroom.values()),
               c.memory.preemption_above_seqs)
        row = rows.setdefault(key, (c, [], []))
        if e.max_num_seqs not in row[1]:
            row[1].append(e.max_num_seqs)
        if e.max_batched_tokens not in row[2]:
            row[2].append(e.max_batched_tokens)
    return list(rows.values())


def table(result: PlanResult, top: int = 10) -> str:
    rows = []
    for i, (c, seqs, tokens) in enumerate(merged(result)[:top], 1):
        e, s = c.candidate.engine, c.scores
        rows.append([i, e.gpu, f"{e.tp}x{c.candidate.replicas}={s.gpus}", ",".join(map(str, sorted(seqs))),
                     ",".join(map(str, sorted(tokens))),
                     f"{s.max_rate_per_s:.2f}", f"{s.goodput_per_gpu:.2f}", _money(s.cost_per_m_output_tokens),
                     _headroom(c), f"{c.little_concurrency:.0f}", f"{c.memory.kv_capacity_tokens:,}", _preempt(c),
                     c.confidence.short()])
    heads = ["#", "GPU", "TPxR=GPUs", "seqs", "batch tok", "max req/s*", "goodput/GPU*", "$/M out tok*",
             "SLO headroom*", "in flight*", "KV tokens", "preempts at", "confidence"]
    if not rows:
        return "no feasible configuration"
    return (tabulate(rows, headers=heads, disable_numparse=True) + "\n* predicted (SIMULATED). TPxR: tensor-parallel "
            "degree x replicas; seqs / batch tok: max_num_seqs / max batched tokens per step; in flight: sequences per "
            "replica at the operating rate (Little's law); several seqs / batch tok values: settings the load never reached, "
            "predicted alike; KV tokens and preempts at: per replica, sequences of the "
            "mean length that fit at full length (the scheduler preempts above it; never when max_num_seqs is lower)")


def confidence_lines(result: PlanResult, top: int = 10) -> list[str]:
    """One line per distinct nearest-validated configuration among the shown rows: what the label rests on."""
    seen: dict[str, PlannedConfig] = {}
    for c, _, _ in merged(result)[:top]:
        seen.setdefault(c.confidence.nearest + c.confidence.label, c)
    out = []
    for c in seen.values():
        k = c.confidence
        med, mx = k.median_abs_error, k.max_abs_error
        err = ", ".join(f"{m.removesuffix('_ms')} median {med[m]:.1%} / max {mx[m]:.1%}" for m in med)
        rate = ""
        if k.max_rate_check:
            mr = k.max_rate_check
            measured = mr.get("measured", {})
            slo = ", ".join(f"{k.replace('_ms', '')} <= {v:g} ms" for k, v in (mr.get("slo") or {}).items())
            rate = (f"; max rate under {slo or 'its SLO'} there: predicted {mr.get('predicted_per_s', 0):.3g} req/s, measured "
                    f"met {measured.get('met_at_per_s')} / failed {measured.get('failed_at_per_s')} req/s"
                    + (f" (crossing {measured['interpolated_crossing_per_s']:.3g} interpolated)"
                       if measured.get("interpolated_crossing_per_s") else ""))
        diff = f" (differs in {', '.join(k.differences)})" if k.differences else ""
        out.append(f"  {c.candidate.engine.gpu} TP{c.candidate.engine.tp}: {k.short()}; nearest validated: "
                   f"{k.nearest}{diff}; sim error there {err}{rate}")
    return out


def infeasible_lines(result: PlanResult, limit: int = 12) -> list[str]:
    groups: dict[str, list[PlannedConfig]] = defaultdict(list)
    for c in result.infeasible:
        e = c.candidate.engine
        groups[f"{e.gpu} TP{e.tp}: {c.reason}"].append(c)
    lines = [f"  {why} ({len(cs)} configuration{'s' if len(cs) > 1 else ''})" for why, cs in groups.items()]
    more = len(lines) - limit
    return lines[:limit] + ([f"  ... {more} more reasons (--json lists every configuration)"] if more > 0 else [])


def text(result: PlanResult, top: int = 10) -> str:
    parts = header(result) + ["", table(result, top)]
    if result.feasible:
        parts += ["", "confidence (results/sim-validation-index.json):"] + confidence_lines(result, top)
    if result.infeasible:
        parts += ["", f"infeasible ({len(result.infeasible)}):"] + infeasible_lines(result)
    return "\n".join(parts)


def _point(p) -> dict | None:
    if p is None:
        return None
    return {"rate_per_s": p.rate_per_s, "requests": p.requests, "percentiles_ms": p.percentiles_ms,
            "slo_fraction": p.slo_fraction, "kept_up": p.kept_up, "pace": p.pace_note}


def to_json(result: PlanResult) -> dict:
    r = result.request

    def entry(c: PlannedConfig) -> dict:
        e = c.candidate.engine
        out = {"gpu": e.gpu, "tp": e.tp, "replicas": c.candidate.replicas, "gpus": c.candidate.gpus,
               "max_num_seqs": e.max_num_seqs, "max_batched_tokens": e.max_batched_tokens,
               "feasible": c.feasible, "reason": c.reason or None,
               "engine_max_rate_per_s": c.engine_max_rate_per_s}
        if c.feasible:
            s, m = c.scores, c.memory
            out.update({
                "max_rate_per_s": s.max_rate_per_s, "operating_rate_per_s": s.operating_rate_per_s,
                "goodput_per_s": s.goodput_per_s, "goodput_per_gpu": s.goodput_per_gpu,
                "output_tok_s": s.output_tok_s, "cost_per_hour": s.cost_per_hour,
                "cost_per_m_output_tokens": s.cost_per_m_output_tokens, "rate_headroom": s.rate_headroom,
                "slo_headroom": c.headroom, "operating_point": _point(c.operating_point),
                "in_flight_per_replica": c.little_concurrency,
                "memory": {"weights_gib_per_gpu": m.weights_gib_per_gpu, "kv_gib_per_replica": m.kv_gib_total,
                           "kv_capacity_tokens_per_replica": m.kv_capacity_tokens, "kv_blocks": m.kv_blocks,
                           "mean_request_blocks": m.blocks_per_request,
                           "sequences_that_fit_at_full_length": m.fits_at_full_length,
                           "preemption_above_seqs": m.preemption_above_seqs},
                "confidence": c.confidence.to_json()})
        return out

    return {"label": LABEL, "simulated": True, "model": r.model.name, "workload": r.workload.description,
            "mean_input_tokens": r.workload.mean_input, "mean_output_tokens": r.workload.mean_output,
            "burstiness": r.workload.burstiness,
            "slo": {"limits_ms": r.slo.limits_ms, "percentile": r.slo.percentile, "and": "kept up"},
            "target_rate_per_s": r.target_rate, "max_gpus": r.space.max_gpus, "rank_by": r.rank_by,
            "prices_per_gpu_hour": r.prices, "price_source": r.price_source,
            "point_size": {"seconds": r.size.seconds, "min_requests": r.size.min_requests,
                           "max_requests": r.size.max_requests}, "seed": r.seed,
            "search": {"configurations": len(result.configs), "feasible": len(result.feasible),
                       "engines_simulated": result.engines_simulated, "replays": result.replays,
                       "requests_simulated": result.requests_simulated, "wall_s": result.wall_s,
                       "cpu_s": result.cpu_s},
            "ranked": [entry(c) for c in result.feasible], "infeasible": [entry(c) for c in result.infeasible]}


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower cost and lower latency)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def write_html(result: PlanResult, path: str, top: int = 10) -> None:
    """A self-contained page: the plan's text and, where prices are known, a cost vs TTFT Pareto plot."""
    rows = [c for c in result.feasible if c.scores.cost_per_m_output_tokens is not None]
    img = ""
    if rows:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            plt = None
        if plt is not None:
            metric = next(iter(result.request.slo.limits_ms))
            pts = [(c.scores.cost_per_m_output_tokens, c.operating_point.percentiles_ms[metric]) for c in rows]
            front = pareto(pts)
            fig, ax = plt.subplots(figsize=(7, 4.2))
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, alpha=0.5, label="feasible configurations")
            fp = sorted(pts[i] for i in front)
            ax.plot([p[0] for p in fp], [p[1] for p in fp], "o-", color="#b00020", label="Pareto front")
            for i in front:
                e = rows[i].candidate
                ax.annotate(f"{e.engine.gpu} {e.engine.tp}x{e.replicas}", pts[i], fontsize=7)
            ax.set_xlabel("$ per million output tokens (predicted)")
            ax.set_ylabel(f"{metric.upper()} p{result.request.slo.percentile:g} ms at the operating rate (predicted)")
            ax.set_title("cost vs latency (SIMULATED)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            img = f'<img alt="Pareto plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    body = html.escape(text(result, top))
    page = (f"<!doctype html><meta charset=utf-8><title>loadgen plan (SIMULATED)</title>"
            f"<h1>loadgen plan — {html.escape(LABEL)}</h1>{img}<pre>{body}</pre>")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
