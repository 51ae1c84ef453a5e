"""`pretrain`, `finetune` and `sweep` subcommands: options -> TrainConfig, result -> table and JSON."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from training_bench.errors import BenchError
from training_bench.fast_paths import COMPILE_SCOPES, KERNELS
from training_bench.model_build import ATTENTION
from training_bench.train import run_training
from training_bench.train_config import ENGINES, LORA_TARGETS, PRECISIONS, TrainConfig


def _on_off(value: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", "none"):
        return False
    raise ValueError(value)


VARY_KEYS = {"recompute": str, "attn": str, "micro_batch": int, "seq_len": int, "layers": int, "method": str,
             "optimizer": str, "zero": int, "offload": str, "precision": str, "grad_accum": int, "lora_rank": int,
             "lora_dtype": str, "strategy": str, "compile": _on_off, "compile_scope": str, "kernels": str, "engine": str, "tp": int}


def count(low: int):
    """An argparse type: an integer of at least `low` (a mistake found before the model is built)."""

    def read(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {low}")
        return value

    return read


def output_file(text: str) -> str:
    """An argparse type: a JSON file that can be written, checked before minutes of measuring, not after."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name, e.g. {path / 'result.json'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: {parent} is not writable; choose another path")
    if any(len(os.fsencode(part)) > 255 for part in path.parts):
        raise argparse.ArgumentTypeError(f"{text}: a name is longer than 255 bytes; choose a shorter path")
    return text


def add_output_argument(group, help_text: str) -> None:
    """`--output FILE` as in loadgen; `--out` stays as a hidden alias for a release."""
    group.add_argument("--output", dest="output", metavar="FILE", type=output_file, help=help_text)
    group.add_argument("--out", dest="output", type=output_file, help=argparse.SUPPRESS)


def add_train_arguments(p: argparse.ArgumentParser, finetune: bool) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--model", default="7b", help="catalog model (default 7b)")
    m.add_argument("--layers", type=count(1), help="keep only this many decoder layers (reported as truncated)")
    if finetune:
        m.add_argument("--method", choices=["lora", "qlora", "full"], default="lora", help="default lora")
        m.add_argument("--rank", dest="lora_rank", type=count(1), default=16, help="LoRA rank (default 16)")
        m.add_argument("--alpha", dest="lora_alpha", type=int, default=32, help="LoRA alpha (default 32)")
        m.add_argument("--lora-dtype", choices=["fp32", "bf16"], default="fp32",
                       help="LoRA adapter weights: fp32 (default, PEFT's: each adapter's input is cast to fp32) or "
                            "bf16 (the base model's dtype, no casts)")
        m.add_argument("--targets", default=",".join(LORA_TARGETS),
                       help="LoRA target modules (default: every linear layer of the decoder)")
        m.add_argument("--bits", type=int, default=4, help="QLoRA base precision (4: NF4)")
    s = p.add_argument_group("shape and steps (defaults: the GPU's, or small ones on a CPU)")
    s.add_argument("--seq-len", type=int, help="tokens per sequence (default 2048 on GPU, 128 on CPU)")
    s.add_argument("--micro-batch", type=int, help="sequences per device per step (default 4 on GPU, 2 on CPU)")
    s.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    s.add_argument("--steps", type=int, help="timed steps (default 10 on GPU, 3 on CPU)")
    s.add_argument("--warmup", type=count(0), help="untimed steps first (default 3 on GPU, 1 on CPU)")
    o = p.add_argument_group("systems options")
    o.add_argument("--engine", choices=list(ENGINES), default="hf",
                   help="hf: the transformers Llama (default); megatron: megatron-core's GPTModel, local layer spec")
    o.add_argument("--attn", choices=list(ATTENTION), default="sdpa", help="attention implementation (default sdpa)")
    o.add_argument("--recompute", default="none", help="activation recomputation: none or full (default none)")
    o.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                   help="auto (default): bf16 on GPU, fp32 on CPU; bf16: weights and optimizer state in bf16; "
                        "amp: fp32 weights with bf16 autocast; fp32; fp8: torchao float8 training of the decoder "
                        "linears (H100/H200-class GPU; fastest with --compile)")
    o.add_argument("--kernels", choices=list(KERNELS), default="none",
                   help="liger: liger-kernel's fused RMSNorm, RoPE, SwiGLU and linear cross-entropy (CUDA)")
    o.add_argument("--optimizer", choices=["adamw", "adamw8bit"], default="adamw",
                   help="adamw (fused on GPU) or adamw8bit (bitsandbytes)")
    o.add_argument("--zero", type=int, choices=[0, 1, 2, 3], default=0, help="DeepSpeed ZeRO stage (default 0: off)")
    o.add_argument("--offload", choices=["none", "optimizer", "param", "both"], default="none",
                   help="ZeRO offload to CPU memory")
    o.add_argument("--strategy", choices=["auto", "single", "ddp", "fsdp", "deepspeed"], default="auto",
                   help="auto: deepspeed with --zero, ddp under torchrun, else single")
    o.add_argument("--compile", action="store_true", help="torch.compile (inductor, default mode)")
    o.add_argument("--compile-scope", choices=list(COMPILE_SCOPES), default="layers",
                   help="layers: each decoder layer, one graph for all (default); model: the whole model")
    o.add_argument("--tp", type=int, default=1, help="tensor-parallel degree under torchrun (--engine megatron)")
    o.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="auto (default): the GPU when one is visible")
    o.add_argument("--skip-fit-check", action="store_true",
                   help="start even when the memory estimate says the run will not fit")
    out = p.add_argument_group("output")
    add_output_argument(out, "write the result JSON here (rank 0)")
    out.add_argument("--json", action="store_true", help="print the result JSON instead of the table")
    out.add_argument("--quiet", action="store_true", help="no per-step progress")


def config_from_args(args: argparse.Namespace, method: str | None = None) -> TrainConfig:
    return TrainConfig(
        model=args.model, layers=args.layers, method=method or args.method, seq_len=args.seq_len,
        micro_batch=args.micro_batch, grad_accum=args.grad_accum, steps=args.steps, warmup=args.warmup,
        attn=args.attn, recompute=args.recompute, precision=args.precision, optimizer=args.optimizer,
        zero=args.zero, offload=args.offload, strategy=args.strategy, compile=args.compile, device=args.device,
        kernels=args.kernels, compile_scope=args.compile_scope, engine=args.engine, tp=args.tp,
        skip_fit_check=args.skip_fit_check,
        lora_rank=getattr(args, "lora_rank", 16), lora_alpha=getattr(args, "lora_alpha", 32),
        lora_dtype=getattr(args, "lora_dtype", "fp32"),
        lora_targets=tuple(t for t in getattr(args, "targets", ",".join(LORA_TARGETS)).split(",") if t),
        bits=getattr(args, "bits", 4))


def _destroy_process_group() -> None:
    try:
        import torch.distributed as tdist
    except ImportError:
        return
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def _rank() -> int:
    return int(os.environ.get("RANK", 0))


def format_result(r: dict) -> str:
    from tabulate import tabulate

    m, t, f, mem = r["model"], r["throughput"], r["flops"], r["memory"]
    cfg = r["config"]
    depth = f"{m['layers']} of {m['full_layers']} layers (TRUNCATED)" if m["truncated"] else f"{m['layers']} layers"
    head = (f"{r['device']} x{r['world_size']}: {m['name']} {depth}, {cfg['method']}, {r['strategy']}, "
            f"micro-batch {cfg['micro_batch']} x {cfg['seq_len']} x accum {cfg['grad_accum']}, attn {cfg['attn']}, "
            f"recompute {cfg['recompute']}, {cfg['precision']}, {cfg['optimizer']}"
            + (f", ZeRO-{cfg['zero']} offload {cfg['offload']}" if cfg["zero"] else "")
            + f"; {describe_applied(r)}")
    gib = lambda b: "-" if b is None else f"{b / 2**30:.2f}"  # noqa: E731
    mfu = r["mfu"]
    rows = [
        ["tokens/s (all ranks)", f"{t['tokens_per_s']:,.0f}"],
        ["tokens/s per rank", f"{t['tokens_per_s_per_gpu']:,.0f}"],
        ["samples/s", f"{t['samples_per_s']:.2f}"],
        (["model TFLOP/s per rank", f"{f['model_tflops_per_gpu']:.1f}"] if f["model_tflops_per_gpu"] >= 1 else
         ["model GFLOP/s per rank", f"{f['model_tflops_per_gpu'] * 1e3:.2f}"]),
        ["MFU", (f"{mfu['value']:.1%} of the {mfu['peak_tflops']:g} TFLOP/s bf16 peak ({mfu['gpu']})"
                 + (f"; {mfu['of_fp8_peak']:.1%} of its {mfu['fp8_peak_tflops']:g} fp8 peak" if "of_fp8_peak" in mfu
                    else "")) if mfu else "- (no catalog GPU)"],
        ["step ms (median)", f"{r['steps']['step_ms_median']:.1f}"],
        *[[f"  {k} ms", f"{v:.1f}"] for k, v in r["phases_ms_median"].items()],
        ["peak memory GiB", gib(mem.get("peak_bytes"))],
        ["  parameters GiB", gib(mem.get("parameters_bytes"))],
        ["  gradients GiB", gib(mem.get("gradients_bytes"))],
        ["  optimizer state GiB", gib(mem.get("optimizer_state_bytes"))],
        ["  activations GiB (one micro-batch)", gib(mem.get("activations_bytes"))],
    ]
    return "\n".join([head, tabulate(rows, disable_numparse=True), f"FLOPs per token: {f['formula']}",
                      f"timing: {r['phase_timing']}; {r['steps']['warmup']} warm-up steps excluded, "
                      f"{r['steps']['measured']} measured"])


def describe_applied(r: dict) -> str:
    """What the run changed from the plain HF model in eager mode, in words (result JSON 'applied')."""
    a = r.get("applied") or {}
    parts = ["megatron-core GPTModel" + (f" TP {r['config'].get('tp', 1)}" if r["config"].get("tp", 1) > 1 else "")
             if a.get("engine") == "megatron" else "HF Llama"]
    if a.get("kernels"):
        parts.append("liger " + "+".join(a["kernels"]))
    if a.get("fp8_linears"):
        parts.append(f"fp8 on {a['fp8_linears']} linears (torchao)")
    if a.get("lora_dtype"):
        parts.append(f"LoRA adapters {a['lora_dtype']}")
    parts.append(f"compiled ({a['compile']})" if a.get("compile") else "eager")
    return ", ".join(parts)


def cmd_train(args: argparse.Namespace, method: str | None = None) -> int:
    cfg = config_from_args(args, method)
    progress = None if args.quiet or _rank() else (lambda msg: print(f"training_bench: {msg}", file=sys.stderr))
    try:
        result = run_training(cfg, progress)
    finally:
        _destroy_process_group()
    result["command"] = sys.argv
    if _rank() == 0:
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1) if args.json else format_result(result))
    return 0


def _parse_value(key: str, value: str, item: str, flag: str):
    try:
        return VARY_KEYS[key](value)
    except ValueError:
        raise BenchError(f"{flag} {item!r}: {key} takes " + ("on/off" if key == "compile" else "numbers")) from None


def _key(text: str) -> str:
    key = text.strip().replace("-", "_")
    return {"rank": "lora_rank", "mb": "micro_batch"}.get(key, key)


def parse_vary(items: list[str]) -> list[tuple[str, list]]:
    out = []
    for item in items:
        key, sep, values = item.partition("=")
        key = _key(key)
        if not sep or key not in VARY_KEYS or not values:
            raise BenchError(f"--vary {item!r}: write KEY=V1,V2 with KEY one of {', '.join(sorted(VARY_KEYS))}")
        out.append((key, [_parse_value(key, v, item, "--vary") for v in values.split(",")]))
    return out


def parse_point(item: str) -> dict:
    """`--point KEY=V,KEY=V`: one configuration beside the grid (e.g. engine=megatron,attn=sdpa)."""
    combo = {}
    for part in item.split(","):
        key, sep, value = part.partition("=")
        key = _key(key)
        if not sep or key not in VARY_KEYS or not value:
            raise BenchError(f"--point {item!r}: write KEY=V,KEY=V with KEY one of {', '.join(sorted(VARY_KEYS))}")
        combo[key] = _parse_value(key, value, item, "--point")
    return combo


FLAG_KEYS = ("model", "layers", "seq_len", "micro_batch", "grad_accum", "steps", "warmup", "attn", "recompute",
             "precision", "optimizer", "zero", "offload", "strategy", "device", "kernels", "compile_scope",
             "engine", "tp")
# The options that make a training path (not a different job); --like carries them over from a measured row.
PATH_KEYS = ("attn", "kernels", "compile", "compile_scope")


def _argv_for(args: argparse.Namespace, combo: dict) -> list[str]:
    """The `pretrain`/`finetune` command line of one sweep point (each point runs in its own process, so memory
    left by one configuration cannot distort the next)."""
    method = combo.get("method", args.method)
    cmd = ["pretrain" if method == "full" else "finetune"]
    if method != "full":
        cmd += ["--method", method, "--rank", str(combo.get("lora_rank", args.lora_rank)),
                "--lora-dtype", combo.get("lora_dtype", args.lora_dtype)]
    flags = {k: getattr(args, k) for k in FLAG_KEYS}
    for key, value in {**flags, **{k: v for k, v in combo.items() if k in flags}}.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    if combo.get("compile", args.compile):
        cmd.append("--compile")
    if args.skip_fit_check:
        cmd.append("--skip-fit-check")
    return cmd


def _config_for(args: argparse.Namespace, combo: dict) -> TrainConfig:
    merged = argparse.Namespace(**{**vars(args), **combo})
    return config_from_args(merged, combo.get("method", args.method))


def _refusal(cfg: TrainConfig, device_type: str) -> str | None:
    """The one-line refusal the point's own process would print, found without starting it."""
    from training_bench.train_config import check_config, dist_env, resolve_defaults

    try:
        check_config(resolve_defaults(cfg, device_type), device_type, dist_env())
    except BenchError as exc:
        return str(exc)
    return None


def _like(args: argparse.Namespace, path: str) -> dict:
    """The training path (PATH_KEYS) of the fastest measured HF bf16 row of `path`."""
    from training_bench.recommend import rows_from_file

    rows = [r for r in rows_from_file(path) if r.result["config"].get("engine", "hf") == "hf"
            and r.result["config"]["precision"] in ("bf16", "auto")]
    if not rows:
        raise BenchError(f"--like {path}: no measured HF bf16 row to start from")
    best = max(rows, key=lambda r: r.tokens_per_s)
    cfg = best.result["config"]
    path_opts = {k: cfg.get(k, getattr(args, k)) for k in PATH_KEYS}
    print(f"sweep: --like {path}: starting from {best.label} ({best.tokens_per_s:,.0f} tok/s): "
          + ", ".join(f"{k}={v}" for k, v in path_opts.items()), file=sys.stderr)
    return path_opts


def _run_point(argv: list[str], timeout: float | None) -> tuple[dict | None, str | None]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        try:
            proc = subprocess.run([sys.executable, "-m", "training_bench", *argv, "--quiet", "--output", str(out)],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:g} s (--timeout)"
        result = json.loads(out.read_text()) if proc.returncode == 0 and out.exists() else None
    error = None if result else ((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
    return result, error


def cmd_sweep(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from scenarios.catalog import get_gpu, gpu_for_device
    from training_bench.devices import pick_device
    from training_bench.recommend import Row, describe, recommend, rows_from_file

    gpu = get_gpu(args.gpu) if args.gpu else None
    if args.from_file:
        best = recommend([row for path in args.from_file for row in rows_from_file(path)], gpu)
        if not best:
            raise BenchError(f"--from {', '.join(args.from_file)}: no measured row"
                             + (f" from {gpu.key} fits" if gpu else ""))
        for row in best.values():
            print(describe(row, gpu))
        return 0
    grid = parse_vary(args.vary or [])
    extra = [parse_point(p) for p in args.point or []]
    if not grid and not extra:
        raise BenchError("sweep needs at least one --vary KEY=V1,V2 (e.g. --vary recompute=none,full) or --point")
    if args.like:
        for key, value in _like(args, args.like).items():
            setattr(args, key, value)
    keys = [k for k, _ in grid]
    combos = [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))] if grid else []
    combos += extra
    device_type = pick_device(args.device).type
    report = {"sweep": grid, "points": [], "command": sys.argv, "like": args.like}
    total = len(combos)
    for i, combo in enumerate(combos, 1):
        label = ", ".join(f"{k}={v}" for k, v in combo.items())
        argv = _argv_for(args, combo)
        refusal = _refusal(_config_for(args, combo), device_type)
        if refusal:
            result, error = None, f"not run: {refusal}"
        else:
            print(f"sweep: [{i}/{total}] {label} ...", file=sys.stderr, flush=True)
            result, error = _run_point(argv, args.timeout)
        report["points"].append({"label": label, "vary": combo, "argv": argv, "result": result, "error": error})
        if args.output:  # rewritten after every point: a cut-off sweep keeps what finished
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(report, indent=1))
        print(f"sweep: [{i}/{total}] {label}: " + (f"{result['throughput']['tokens_per_s']:,.0f} tok/s" if result
                                                   else error), file=sys.stderr, flush=True)
    points = report["points"]
    base = next((p["result"] for p in points if p["result"]), None)
    rows = []
    for p in points:
        r = p["result"]
        if r is None:
            rows.append([p["label"], "failed" if not p["error"].startswith("not run") else "not run", "", "", "", "",
                         "", "", p["error"][:90]])
            continue
        peak = r["memory"].get("peak_bytes")
        rel_t = r["steps"]["step_ms_median"] / base["steps"]["step_ms_median"]
        rel_m = (peak / base["memory"]["peak_bytes"]) if peak and base["memory"].get("peak_bytes") else None
        rows.append([p["label"], f"{r['throughput']['tokens_per_s']:,.0f}", f"{r['flops']['model_tflops_per_gpu']:.1f}",
                     f"{r['mfu']['value']:.1%}" if r["mfu"] else "-", f"{r['steps']['step_ms_median']:.1f}",
                     f"{rel_t:.2f}x", "-" if peak is None else f"{peak / 2**30:.2f}",
                     "-" if rel_m is None else f"{rel_m:.2f}x", describe_applied(r)])
    print(tabulate(rows, headers=["configuration", "tok/s", "TFLOP/s", "MFU (bf16 peak)", "step ms", "time vs first",
                                  "peak GiB", "memory vs first", "what it ran"], disable_numparse=True))
    measured = [Row(p["label"], p["result"]) for p in points if p["result"]]
    here = gpu or (gpu_for_device(base["device"]) if base and device_type == "cuda" else None)
    best = recommend(measured, here)
    report["recommended"] = [{"group": list(g), "label": row.label, "line": describe(row, here)}
                             for g, row in best.items()]
    for row in best.values():
        print("recommended: " + describe(row, here))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1))
    return 0 if all(p["result"] or p["error"].startswith("not run") for p in points) else 1
