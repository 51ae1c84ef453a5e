"""`python -m training_bench micro ...`: the operator, communication, layer and profile commands, with the device
defaults their shapes come from and the tables they print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scenarios.catalog import get_gpu, get_model
from training_bench.devices import pick_device
from training_bench.errors import BenchError

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


# Defaults that depend on the device: the GPU's are the paper's shapes; the CPU's finish `--model tiny` in seconds
# and the 7B shapes in a few minutes on a 2-core machine.
DEVICE_DEFAULTS = {
    "cuda": {"dtype": "bf16", "warmup": 5, "reps": 30, "prefill_batch": 8, "seq_len": 2048, "decode_batch": 64,
             "context": 2048, "attn_ops": "eager,sdpa-flash,sdpa-efficient,sdpa-cudnn,sdpa-math",
             "tokens": [1, 4, 16, 64, 256, 1024, 4096, 16384], "prefill_seqs": [128, 512, 2048, 4096],
             "decode": [(1, 512), (8, 2048), (32, 2048), (128, 2048), (256, 4096)]},
    "cpu": {"dtype": "fp32", "warmup": 2, "reps": 5, "prefill_batch": 1, "seq_len": 256, "decode_batch": 4,
            "context": 256, "attn_ops": "eager,sdpa-math", "tokens": [1, 16, 256], "prefill_seqs": [64, 256],
            "decode": [(1, 256), (4, 256)]},
}


def _resolve(args: argparse.Namespace, device, *names: str) -> None:
    """Fill the options left out (None) with the device's defaults."""
    defaults = DEVICE_DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    for name in names:
        if getattr(args, name, None) is None:
            setattr(args, name, defaults["attn_ops" if name == "attn" else name])


def _dtype(args):
    import torch

    return getattr(torch, DTYPES[args.dtype])


def _ceiling_sizes(args, device) -> tuple[int, int]:
    from training_bench.comm import parse_size

    gemm = args.gemm_size or (8192 if device.type == "cuda" else 512)
    copy = parse_size(args.copy_size) if args.copy_size else (2**30 if device.type == "cuda" else 64 * 2**20)
    return gemm, copy


def _write(args, data: dict) -> None:
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)


def _fmt(v, digits=1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _sig(v) -> str:
    """A rate with three significant figures below 100, so a small one never prints as 0.0."""
    if v is None:
        return "-"
    if v == 0 or abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _progress(items, args, desc: str):
    """A progress bar on stderr that shows itself only once a run has taken two seconds (quiet with --quiet)."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="op", delay=2.0, disable=args.quiet, file=sys.stderr, leave=False)


def rate_unit(gemm_tflops: float) -> tuple[str, float]:
    """TFLOP/s on a GPU; GFLOP/s where the GEMM ceiling is under 1 TFLOP/s (a CPU), so no figure prints as 0.0."""
    return ("TFLOP/s", 1.0) if gemm_tflops >= 1.0 else ("GFLOP/s", 1e3)


def _of_ceiling(row: dict) -> str:
    frac = row.get("fraction_of_ceiling")
    if frac is None:
        return "-"
    share = "<1%" if frac < 0.005 else f"{frac:.0%}"
    return f"{share} {row['ceiling']}" + (" !" if frac > 1.0 else "")


def cmd_ops(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from training_bench import ops as O
    from training_bench.ceilings import copy_ceiling, gemm_ceiling
    from training_bench.profile import device_name

    model = get_model(args.model)
    device = pick_device(args.device)
    _resolve(args, device, "dtype", "warmup", "reps", "prefill_batch", "seq_len", "decode_batch", "context", "attn")
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    bad = [g for g in only if g not in O.GROUPS]
    if bad:
        raise BenchError(f"unknown operator group(s) {', '.join(bad)}; choose from {', '.join(O.GROUPS)}")
    impls = tuple(x.strip() for x in args.attn.split(",") if x.strip())
    bad = [i for i in impls if i not in O.ATTENTION_IMPLS]
    if bad:
        raise BenchError(f"unknown attention implementation(s) {', '.join(bad)}; choose from {', '.join(O.ATTENTION_IMPLS)}")
    cases = O.op_cases(model, args.prefill_batch, args.seq_len, args.decode_batch, args.context, args.tp, only, impls,
                       args.backward, phases=("prefill", "decode"))
    dtype = _dtype(args)
    gemm_n, copy_bytes = _ceiling_sizes(args, device)
    gemm = gemm_ceiling(device, dtype, gemm_n, args.warmup, args.reps)
    copy = copy_ceiling(device, copy_bytes, args.warmup, args.reps)
    rows = []
    for case in _progress(cases, args, "micro ops"):
        r = O.run_case(case, device, dtype, args.warmup, args.reps)
        rows.append(r.as_dict(gemm["tflops"], copy["gbs"]))
    unit, scale = rate_unit(gemm["tflops"])
    table = [[r["phase"], r["name"], r["shape"], _fmt(r.get("median_ms"), 3), _fmt(r.get("p90_ms"), 3),
              _sig(None if r.get("tflops") is None else r["tflops"] * scale), _sig(r.get("gbs")),
              r.get("bound") or "-", _of_ceiling(r), r.get("skipped", "")[:60]] for r in rows]
    print(f"{device_name(device)}, {args.dtype}, {model.name} shapes (tp {args.tp}); prefill {args.prefill_batch} x "
          f"{args.seq_len}, decode {args.decode_batch} x {args.context}; ceilings: GEMM "
          f"{_sig(gemm['tflops'] * scale)} {unit} ({gemm['op']}), copy {_sig(copy['gbs'])} GB/s ({copy['op']}, "
          "read+write)")
    print(tabulate(table, headers=["phase", "op", "shape", "median ms", "p90 ms", unit, "GB/s", "bound",
                                   "of ceiling", "skipped"], disable_numparse=True))
    print("bound: matrix operators only (GEMMs, attention), from the roofline of the two measured ceilings; the "
          "others run on vector units, whose ceiling is not measured, and are given as a share of the copy "
          "bandwidth." + (" !: above the measured ceiling (inputs left in cache, or a shape the ceiling's size "
                          "under-measures)." if any((r.get("fraction_of_ceiling") or 0) > 1 for r in rows) else ""))
    _write(args, {"device": device_name(device), "model": model.name, "dtype": args.dtype, "tp": args.tp,
                  "prefill": {"batch": args.prefill_batch, "seq_len": args.seq_len},
                  "decode": {"batch": args.decode_batch, "context": args.context},
                  "ceilings": {"gemm": gemm, "copy": copy}, "ops": rows, "command": sys.argv})
    return 0


def cmd_comm(args: argparse.Namespace) -> int:
    import torch.distributed as dist
    from tabulate import tabulate

    from training_bench.comm import OPS, bench_collective, init_from_env, parse_sizes

    ops = [x.strip() for x in args.ops.split(",") if x.strip()]
    bad = [o for o in ops if o not in OPS]
    if bad:
        raise BenchError(f"unknown collective(s) {', '.join(bad)}; choose from {', '.join(OPS)}")
    sizes = parse_sizes(args.sizes)
    rank, world, device = init_from_env()
    try:
        results = [bench_collective(op, size, rank, world, device, args.warmup, args.iters)
                   for op in ops for size in sizes if not (op == "send_recv" and world < 2)]
    finally:
        dist.destroy_process_group()
    if rank == 0:
        table = [[r["op"], f"{r['bytes']:,}", _fmt(r["time_us"]), _fmt(r["algbw_gbs"], 2), _fmt(r["busbw_gbs"], 2)]
                 for r in results]
        print(f"{world} ranks, backend {results[0]['backend'] if results else '-'}")
        print(tabulate(table, headers=["collective", "bytes", "time us", "algbw GB/s", "busbw GB/s"],
                       disable_numparse=True))
        _write(args, {"world": world, "device": str(device), "results": results, "command": sys.argv})
    return 0


def cmd_layer(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from training_bench import layer as L
    from training_bench import ops as O
    from training_bench.profile import device_name

    model = get_model(args.model)
    for t in args.tp:  # every degree checked before the first is measured
        O.check_tp(model, t)
    device = pick_device(args.device)
    _resolve(args, device, "dtype", "warmup", "reps", "seq_len")
    dtype = _dtype(args)
    comm_results = json.loads(Path(args.comm).read_text())["results"] if args.comm else None
    breakdowns = []
    for t in _progress(args.tp, args, "micro layer"):
        phase_tokens = args.batch * args.seq_len if args.phase == "prefill" else args.batch
        cases = O.op_cases(model, args.batch, args.seq_len, args.batch, args.seq_len, t,
                           only=("gemm", "attention", "norm", "rope", "activation"), attention_impls=(args.attn,),
                           phases=(args.phase,))
        rows = [O.run_case(c, device, dtype, args.warmup, args.reps).as_dict() for c in cases if c.name != "lm_head"]
        comm = (L.comm_from_results(comm_results, t) if comm_results else None) or L.comm_from_catalog(get_gpu(args.gpu))
        breakdowns.append({**L.layer_breakdown(rows, model, phase_tokens, t, comm), "ops": rows})
    table = [[b["tp"], *(f"{b['per_layer_ms'][k]:.3f} ({b['share'][k]:.0%})" for k in
                         ("attention", "mlp", "norms", "communication")), f"{b['layer_ms']:.3f}",
              f"{b['model_layers_ms']:.1f}"] for b in breakdowns]
    print(f"{device_name(device)}, {model.name}, {args.phase}, batch {args.batch} x {args.seq_len}, per layer "
          f"(ms and share); communication: {breakdowns[0]['communication_source']}")
    print(tabulate(table, headers=["TP", "attention", "MLP", "norms", "communication", "layer ms",
                                   f"{model.num_layers} layers ms"], disable_numparse=True))
    _write(args, {"device": device_name(device), "model": model.name, "phase": args.phase, "batch": args.batch,
                  "seq_len": args.seq_len, "breakdowns": breakdowns, "command": sys.argv})
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from training_bench.profile import build_profile

    model = get_model(args.model)
    if args.gpu:
        get_gpu(args.gpu)
    device = pick_device(args.device)
    _resolve(args, device, "dtype", "warmup", "reps", "tokens", "prefill_seqs", "decode")
    dtype = _dtype(args)
    gemm_n, copy_bytes = _ceiling_sizes(args, device)
    profile = build_profile(model, device, dtype, args.tokens, args.prefill_seqs, args.decode, args.attn, gemm_n,
                            copy_bytes, args.warmup, args.reps, get_gpu(args.gpu).key if args.gpu else None,
                            progress=(lambda msg: None) if args.quiet else
                            (lambda msg: print(f"profile: {msg}", file=sys.stderr)))
    profile["command"] = sys.argv
    c = profile["ceilings"]
    unit, scale = rate_unit(c["gemm"]["tflops"])
    print(f"{profile['device']}: GEMM {c['gemm']['tflops'] * scale:,.1f} {unit}, copy {c['copy']['gbs']:.1f} GB/s; "
          f"{sum(len(v.get('seconds', [])) for v in profile['ops'].values())} operator points")
    if not args.output:
        args.output = "profile.json"
    _write(args, profile)
    return 0
