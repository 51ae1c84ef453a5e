"""`loadgen plan`: which GPU, how many, which TP degree and engine settings serve a workload under an SLO for the
least money, predicted by the simulated engine. Flags to typed objects here; the search is loadgen.plan.planner."""

from __future__ import annotations

import argparse
import json
import math

from loadgen.config import load_scenario
from loadgen.errors import LoadgenError
from loadgen.plan.planner import PlanRequest, run_plan
from loadgen.plan.rank import RANK_KEYS, parse_prices
from loadgen.plan.report import text, to_json, write_html
from loadgen.plan.search import PLANNED_METRICS, PointSize, Slo
from loadgen.plan.space import SearchSpace
from loadgen.plan.workload import from_dataset, from_distributions, from_scenario
from loadgen.slo import parse_slo
from scenarios.catalog import get_gpu, get_model, list_gpus

DEFAULT_TP = "1,2,4,8"
DEFAULT_SEQS = "64,128,256,512"
DEFAULT_TOKENS = "2048,4096,8192,16384"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "plan", help="search GPU x count x TP x replicas x engine settings for an SLO (SIMULATED predictions)",
        description="Rank deployments by cost per million output tokens (or goodput per GPU) under an SLO, "
                    "predicted by the simulated engine replayed in virtual time; each prediction names the nearest "
                    "validated configuration and the sim's measured error there.")
    add_arguments(p)
    p.set_defaults(func=cmd_plan)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    w = p.add_argument_group("workload")
    w.add_argument("--model", default=None, help="catalog model (default: the scenario's, else 7b)")
    w.add_argument("--scenario", default=None, help="a scenario name or file: its lengths or dataset, arrival "
                   "burstiness, model and SLO (flags override)")
    w.add_argument("--input-len", default=None, help="prompt tokens: N or a distribution (uniform:a,b, normal:m,s, "
                   "lognormal:mean,sigma); default 512")
    w.add_argument("--output-len", default=None, help="output tokens, as --input-len; default 128")
    w.add_argument("--dataset", default=None, help="take lengths from a dataset or trace file (ShareGPT, prompts "
                   "JSONL, Azure / BurstGPT CSV); its timestamps are not used")
    w.add_argument("--slo", default=None, help="limits, e.g. ttft:100ms,tpot:10ms (metrics ttft, tpot, e2el)")
    w.add_argument("--percentile", type=float, default=90.0, help="each limit holds at this percentile (default 90)")
    w.add_argument("--rate", type=float, default=None, help="target total request rate (req/s): each engine gets "
                   "the fewest replicas that reach it; without it every configuration is scored fully loaded")
    s = p.add_argument_group("search space")
    s.add_argument("--gpu", default=None, help="catalog GPUs, comma-separated (default: every catalog GPU)")
    s.add_argument("--tp", default=DEFAULT_TP, help=f"tensor-parallel degrees (default {DEFAULT_TP})")
    s.add_argument("--max-gpus", type=int, default=8, help="GPU budget: TP x replicas at most this (default 8)")
    s.add_argument("--replicas", default=None, help="replica counts (default: every count within --max-gpus)")
    s.add_argument("--max-num-seqs", default=DEFAULT_SEQS, help=f"engine sequence limits (default {DEFAULT_SEQS})")
    s.add_argument("--max-batched-tokens", default=DEFAULT_TOKENS,
                   help=f"engine token budgets per step (default {DEFAULT_TOKENS})")
    s.add_argument("--max-model-len", type=int, default=None,
                   help="engine context length; the KV cache must hold one (default: the model's)")
    o = p.add_argument_group("scoring and output")
    o.add_argument("--gpu-price", default=None, help="$ per GPU-hour, e.g. h100=2.5,h200=3.1 (default: the "
                   "catalog's example prices)")
    o.add_argument("--rank", default="cost", choices=RANK_KEYS, help="order (default cost per M output tokens)")
    o.add_argument("--top", type=int, default=10, help="rows shown (default 10)")
    o.add_argument("--point-seconds", type=float, default=30.0, help="seconds of arrivals per replayed point "
                   "(default 30)")
    o.add_argument("--min-requests", type=int, default=200, help="requests per point at least (default 200)")
    o.add_argument("--max-requests", type=int, default=4000, help="requests per point at most (default 4000)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per CPU)")
    o.add_argument("--json", action="store_true", help="print the whole plan as JSON on stdout")
    o.add_argument("--out", default=None, help="also write the JSON to this file")
    o.add_argument("--html", default=None, help="write an HTML page with a cost vs latency Pareto plot")
    o.add_argument("--quiet", action="store_true", help="no progress bar")


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise LoadgenError(f"bad {flag} {text!r}: comma-separated whole numbers expected, e.g. 1,2,4") from None
    if not values or any(v < 1 for v in values):
        raise LoadgenError(f"bad {flag} {text!r}: give at least one number, each at least 1")
    return tuple(dict.fromkeys(values))


def _positive(value: float | None, flag: str) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise LoadgenError(f"{flag} must be a positive number, got {value:g}")


def build_request(args: argparse.Namespace) -> PlanRequest:
    """Flags (and a scenario) to one validated PlanRequest; every user mistake is a LoadgenError/CatalogError."""
    scenario = load_scenario(args.scenario) if args.scenario else None
    if scenario is not None and args.dataset:
        raise LoadgenError("give --scenario or --dataset, not both")
    model = get_model(args.model or (scenario.data.get("model") if scenario else None) or "7b")
    for flag in ("rate", "percentile", "point_seconds", "max_requests", "min_requests", "max_gpus", "top"):
        _positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    if not args.percentile <= 100:
        raise LoadgenError(f"--percentile must be at most 100, got {args.percentile:g}")
    if args.min_requests > args.max_requests:
        raise LoadgenError("--min-requests must not exceed --max-requests")
    slo_text = args.slo or (scenario.data.get("slo") if scenario else None)
    if not slo_text:
        raise LoadgenError("give --slo, e.g. --slo ttft:100ms,tpot:10ms (or a scenario that has one)")
    limits = parse_slo(slo_text)
    unplanned = [k for k in limits if k not in PLANNED_METRICS]
    if unplanned:
        raise LoadgenError(f"--slo {', '.join(unplanned)}: the plan predicts {', '.join(PLANNED_METRICS)} only; "
                           "use tpot for the time per output token")
    gpus = tuple(dict.fromkeys(get_gpu(g) for g in args.gpu.split(","))) if args.gpu else tuple(list_gpus())
    max_len = args.max_model_len or model.max_context
    n = max(args.max_requests, 20)
    if args.dataset:
        workload = from_dataset(args.dataset, n, args.seed, max_len)
    elif scenario is not None:
        workload = from_scenario(scenario, n, args.seed, max_len, args.input_len, args.output_len)
    else:
        workload = from_distributions(args.input_len or "512", args.output_len or "128", n, args.seed, max_len)
    keys = {name: g.key for g in list_gpus() for name in (g.key, *g.aliases)}
    given = parse_prices(args.gpu_price, keys)
    prices, sources = {}, []
    for g in gpus:
        if g.key in given:
            prices[g.key] = given[g.key]
            sources.append(f"{g.key} ${given[g.key]:g} (--gpu-price)")
        elif g.example_price_per_gpu_hour is not None:
            prices[g.key] = g.example_price_per_gpu_hour
            sources.append(f"{g.key} ${g.example_price_per_gpu_hour:g} (catalog EXAMPLE, not a quote)")
        else:
            sources.append(f"{g.key} unknown (no cost)")
    space = SearchSpace(gpus, _ints(args.tp, "--tp"), _ints(args.max_num_seqs, "--max-num-seqs"),
                        _ints(args.max_batched_tokens, "--max-batched-tokens"), args.max_gpus,
                        _ints(args.replicas, "--replicas") if args.replicas else None)
    if not space.candidates():
        raise LoadgenError(f"no configuration fits --max-gpus {args.max_gpus} with --tp {args.tp}; raise --max-gpus")
    return PlanRequest(model, space, workload, Slo(limits, args.percentile),
                       PointSize(args.point_seconds, args.min_requests, args.max_requests), args.seed, args.rate,
                       prices, "; ".join(sources), args.max_model_len, args.rank)


def cmd_plan(args: argparse.Namespace) -> int:
    req = build_request(args)
    result = run_plan(req, jobs=args.jobs, progress=not args.quiet)
    data = to_json(result)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
    if args.html:
        write_html(result, args.html, args.top)
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print(text(result, args.top))
    return 0
