"""`python -m training_bench`: micro-benchmarks of operators and communication, layer breakdowns, profiles.

User mistakes print one line naming the fix and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from scenarios.catalog import CatalogError, get_gpu, get_model
from training_bench.devices import pick_device
from training_bench.errors import BenchError
from training_bench.train_cli import add_output_argument, add_train_arguments

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _version() -> str:
    """The installed distribution's version (whatever the distribution is called)."""
    from importlib import metadata

    for dist in metadata.packages_distributions().get("training_bench", []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown (not installed)"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers, e.g. 1,2,4,8") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers")
    return values


def _pairs(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        b, sep, c = part.partition("x")
        if not sep or not b.strip().isdigit() or not c.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{part!r}: write BATCHxCONTEXT, e.g. 8x2048")
        out.append((int(b), int(c)))
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="7b", help="catalog model whose shapes are used (default 7b)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="element type (default bf16 on GPU, fp32 on CPU, where "
                                                            "bf16 matmuls run ~14x slower)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help="default: cuda when available")
    p.add_argument("--warmup", type=int, help="untimed calls before timing (default 5 on GPU, 2 on CPU)")
    p.add_argument("--reps", type=int, help="timed repetitions per operator (default 30 on GPU, 5 on CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_output_argument(p, "write the results as JSON to this file")


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


def build_parser() -> Parser:
    parser = Parser(prog="python -m training_bench",
                    description="How fast LLMs train and fine-tune, and where the time goes: training runs with the "
                                "paper's optimizations, and operator and communication micro-benchmarks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    from training_bench.train_cli import cmd_sweep, cmd_train

    pre = sub.add_parser("pretrain", help="pre-training steps of a catalog model: tokens/s, MFU, memory, phases",
                         description="Full-parameter training steps of a random-weight Llama-shaped model. Under "
                                     "torchrun the same command runs data parallel (DDP, FSDP2 or DeepSpeed ZeRO).")
    add_train_arguments(pre, finetune=False)
    pre.set_defaults(func=lambda a: cmd_train(a, "full"))
    fin = sub.add_parser("finetune", help="fine-tuning steps: LoRA, QLoRA (4-bit NF4 base) or full",
                         description="Fine-tuning steps: LoRA adapters (peft) on a bf16 base, QLoRA on a 4-bit NF4 "
                                     "base (bitsandbytes), or full fine-tuning.")
    add_train_arguments(fin, finetune=True)
    fin.set_defaults(func=cmd_train)
    sw = sub.add_parser("sweep", help="run a grid of training configurations, compare them, recommend the fastest",
                        description="Each combination runs in its own process; the table gives each option's "
                                    "time and memory relative to the first configuration and what each row ran; "
                                    "the last line names the fastest configuration that fits in memory. The results "
                                    "file is rewritten after every point.")
    add_train_arguments(sw, finetune=True)
    sw.set_defaults(method="full")
    grid = sw.add_argument_group("sweep")
    grid.add_argument("--vary", action="append", help="KEY=V1,V2 (repeatable; the grid is their product), e.g. "
                                                      "kernels=none,liger, compile=off,on, precision=bf16,fp8, "
                                                      "engine=hf,megatron, recompute=none,full, attn=eager,sdpa")
    grid.add_argument("--point", action="append", help="KEY=V,KEY=V (repeatable): one more configuration beside "
                                                       "the grid, e.g. engine=megatron,attn=sdpa")
    grid.add_argument("--like", metavar="FILE", help="start every point from the training path (attn, kernels, "
                                                     "compile) of the fastest HF bf16 row of this sweep result")
    grid.add_argument("--timeout", type=float, help="seconds one point may run before it is stopped (default none)")
    grid.add_argument("--gpu", help="catalog GPU to recommend for (rows measured on it, peak within its memory; "
                                    "default: the GPU the sweep ran on)")
    grid.add_argument("--from", dest="from_file", metavar="FILE",
                      help="run nothing: recommend from the rows of this sweep or training_matrix result")
    sw.set_defaults(func=cmd_sweep)

    micro = sub.add_parser("micro", help="operator and communication micro-benchmarks",
                           description="Operators at a catalog model's shapes, collectives across torchrun's "
                                       "processes, one layer's module breakdown, and profiles for the simulated "
                                       "engine. On a CPU the defaults are small shapes and fp32.")
    msub = micro.add_subparsers(dest="what", metavar="WHAT", parser_class=Parser)
    msub.required = True

    ops = msub.add_parser("ops", help="every operator of a layer at the model's shapes (prefill and decode)",
                          description="Times each operator of one decoder layer (plus embedding and LM head) against "
                                      "the device's measured GEMM and copy ceilings; matrix operators are classified "
                                      "compute- or memory-bound by the roofline of those ceilings.")
    _common(ops)
    ops.add_argument("--only", default="gemm,attention,norm,rope,activation,softmax,embedding",
                     help="operator groups: gemm, attention, norm, rope, activation, softmax, embedding")
    ops.add_argument("--attn", default=None,
                     help="attention implementations to time (unavailable ones are reported as skipped; default "
                          "all five on GPU, eager,sdpa-math on CPU)")
    ops.add_argument("--prefill-batch", type=int, help="sequences per prefill (default 8 on GPU, 1 on CPU)")
    ops.add_argument("--seq-len", type=int, help="prefill sequence length (default 2048 on GPU, 256 on CPU)")
    ops.add_argument("--decode-batch", type=int, help="sequences per decode step (default 64 on GPU, 4 on CPU)")
    ops.add_argument("--context", type=int, help="KV-cache length for decode attention (default 2048 on GPU, "
                                                 "256 on CPU)")
    ops.add_argument("--tp", type=int, default=1, help="time the tensor-parallel shards of this degree (default 1)")
    ops.add_argument("--backward", action="store_true", help="also time forward+backward (training) for prefill")
    ops.add_argument("--gemm-size", type=int, default=None, help="ceiling GEMM N (default 8192 on GPU, 512 on CPU)")
    ops.add_argument("--copy-size", default=None, help="ceiling copy size (default 1G on GPU, 64M on CPU)")
    ops.set_defaults(func=cmd_ops)

    comm = msub.add_parser("comm", help="collectives across the processes torchrun started",
                           description="All-reduce, all-gather, reduce-scatter, broadcast, all-to-all and send/recv "
                                       "across message sizes, with nccl-tests' algorithm and bus bandwidth; run it "
                                       "under torchrun (NCCL on GPUs, gloo on CPU).")
    comm.add_argument("--ops", default="all_reduce,all_gather,reduce_scatter,broadcast,all_to_all,send_recv",
                      help="collectives to time")
    comm.add_argument("--sizes", default="1K-1G", help="message sizes: a range of powers of two (1K-1G) or a list")
    comm.add_argument("--warmup", type=int, default=5, help="untimed calls per size (default 5)")
    comm.add_argument("--iters", type=int, default=20, help="timed calls per size (default 20)")
    add_output_argument(comm, "write the results as JSON (rank 0)")
    comm.set_defaults(func=cmd_comm)

    layer = msub.add_parser("layer", help="one layer's time split into attention, MLP, norms and communication",
                            description="The paper's module-wise analysis: one decoder layer's operators measured "
                                        "at the tensor-parallel shard shapes of each degree, plus two all-reduces "
                                        "per layer (measured with --comm, else estimated from the catalog link).")
    _common(layer)
    layer.add_argument("--tp", type=_ints, default=[1, 2, 4, 8], help="tensor-parallel degrees (default 1,2,4,8)")
    layer.add_argument("--phase", choices=["prefill", "decode"], default="prefill", help="default prefill")
    layer.add_argument("--batch", type=int, default=1, help="sequences (default 1)")
    layer.add_argument("--seq-len", type=int, help="prefill length, or decode context (default 2048 on GPU, "
                                                   "256 on CPU)")
    layer.add_argument("--attn", default="sdpa-flash", help="attention implementation (default sdpa-flash)")
    layer.add_argument("--comm", help="results JSON of `micro comm` to take all-reduce times from")
    layer.add_argument("--gpu", default="h100", help="catalog GPU whose link bandwidth estimates communication "
                                                     "when --comm is not given (default h100)")
    layer.set_defaults(func=cmd_layer)

    prof = msub.add_parser("profile", help="measure ceilings and operator cost tables for the simulated engine",
                           description="Measured GEMM and copy ceilings plus per-layer operator tables by token "
                                       "count, written as a profile that `loadgen run --profile` loads.")
    _common(prof)
    prof.add_argument("--gpu", default=None, help="catalog GPU this profile stands for (recorded; default: none)")
    prof.add_argument("--tokens", type=_ints, default=None,
                      help="token counts for the per-layer operator tables (default 1,4,...,16384 on GPU, "
                           "1,16,256 on CPU)")
    prof.add_argument("--prefill-seqs", type=_ints, default=None,
                      help="sequence lengths for prefill attention (default 128,512,2048,4096 on GPU, 64,256 on CPU)")
    prof.add_argument("--decode", type=_pairs, default=None,
                      help="BATCHxCONTEXT points for decode attention (default 1x512,...,256x4096 on GPU, "
                           "1x256,4x256 on CPU)")
    prof.add_argument("--attn", default="sdpa-flash", help="attention implementation (default sdpa-flash)")
    prof.add_argument("--gemm-size", type=int, default=None, help="ceiling GEMM N (default 8192 on GPU, 512 on CPU)")
    prof.add_argument("--copy-size", default=None, help="ceiling copy size (default 1G on GPU, 64M on CPU)")
    prof.set_defaults(func=cmd_profile)
    return parser


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from training_bench.fast_paths import quiet_imports

    quiet_imports()
    try:
        return args.func(args)
    except (BenchError, CatalogError) as exc:
        print(f"training_bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("training_bench: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"training_bench: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
