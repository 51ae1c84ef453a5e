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
from training_bench.model_build import ATTENTION
from training_bench.train import LORA_TARGETS, TrainConfig, run_training

VARY_KEYS = {"recompute": str, "attn": str, "micro_batch": int, "seq_len": int, "layers": int, "method": str,
             "optimizer": str, "zero": int, "offload": str, "precision": str, "grad_accum": int, "lora_rank": int,
             "strategy": str, "compile": lambda v: v.lower() in ("1", "true", "yes", "on")}


def add_train_arguments(p: argparse.ArgumentParser, finetune: bool) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--model", default="7b", help="catalog model (default 7b)")
    m.add_argument("--layers", type=int, help="keep only this many decoder layers (reported as truncated)")
    if finetune:
        m.add_argument("--method", choices=["lora", "qlora", "full"], default="lora", help="default lora")
        m.add_argument("--rank", dest="lora_rank", type=int, default=16, help="LoRA rank (default 16)")
        m.add_argument("--alpha", dest="lora_alpha", type=int, default=32, help="LoRA alpha (default 32)")
        m.add_argument("--targets", default=",".join(LORA_TARGETS),
                       help="LoRA target modules (default: every linear layer of the decoder)")
        m.add_argument("--bits", type=int, default=4, help="QLoRA base precision (4: NF4)")
    s = p.add_argument_group("shape and steps")
    s.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence (default 2048)")
    s.add_argument("--micro-batch", type=int, default=4, help="sequences per GPU per step (default 4)")
    s.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    s.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    s.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    o = p.add_argument_group("systems options")
    o.add_argument("--attn", choices=list(ATTENTION), default="sdpa", help="attention implementation (default sdpa)")
    o.add_argument("--recompute", default="none", help="activation recomputation: none or full (default none)")
    o.add_argument("--precision", choices=["bf16", "amp"], default="bf16",
                   help="bf16: weights and optimizer state in bf16; amp: fp32 weights with bf16 autocast")
    o.add_argument("--optimizer", choices=["adamw", "adamw8bit"], default="adamw",
                   help="adamw (fused on GPU) or adamw8bit (bitsandbytes)")
    o.add_argument("--zero", type=int, choices=[0, 1, 2, 3], default=0, help="DeepSpeed ZeRO stage (default 0: off)")
    o.add_argument("--offload", choices=["none", "optimizer", "param", "both"], default="none",
                   help="ZeRO offload to CPU memory")
    o.add_argument("--strategy", choices=["auto", "single", "ddp", "fsdp", "deepspeed"], default="auto",
                   help="auto: deepspeed with --zero, ddp under torchrun, else single")
    o.add_argument("--compile", action="store_true", help="torch.compile the model")
    o.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    out = p.add_argument_group("output")
    out.add_argument("--out", help="write the result JSON here (rank 0)")
    out.add_argument("--json", action="store_true", help="print the result JSON instead of the table")
    out.add_argument("--quiet", action="store_true", help="no per-step progress")


def config_from_args(args: argparse.Namespace, method: str | None = None) -> TrainConfig:
    return TrainConfig(
        model=args.model, layers=args.layers, method=method or args.method, seq_len=args.seq_len,
        micro_batch=args.micro_batch, grad_accum=args.grad_accum, steps=args.steps, warmup=args.warmup,
        attn=args.attn, recompute=args.recompute, precision=args.precision, optimizer=args.optimizer,
        zero=args.zero, offload=args.offload, strategy=args.strategy, compile=args.compile, device=args.device,
        lora_rank=getattr(args, "lora_rank", 16), lora_alpha=getattr(args, "lora_alpha", 32),
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
            + (f", ZeRO-{cfg['zero']} offload {cfg['offload']}" if cfg["zero"] else ""))
    gib = lambda b: "-" if b is None else f"{b / 2**30:.2f}"  # noqa: E731
    mfu = r["mfu"]
    rows = [
        ["tokens/s (all ranks)", f"{t['tokens_per_s']:,.0f}"],
        ["tokens/s per rank", f"{t['tokens_per_s_per_gpu']:,.0f}"],
        ["samples/s", f"{t['samples_per_s']:.2f}"],
        ["model TFLOP/s per rank", f"{f['model_tflops_per_gpu']:.1f}"],
        ["MFU", f"{mfu['value']:.1%} of {mfu['peak_tflops']:g} ({mfu['gpu']})" if mfu else "- (no catalog GPU)"],
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


def cmd_train(args: argparse.Namespace, method: str | None = None) -> int:
    cfg = config_from_args(args, method)
    progress = None if args.quiet or _rank() else (lambda msg: print(f"training_bench: {msg}", file=sys.stderr))
    try:
        result = run_training(cfg, progress)
    finally:
        _destroy_process_group()
    result["command"] = sys.argv
    if _rank() == 0:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1) if args.json else format_result(result))
    return 0


def parse_vary(items: list[str]) -> list[tuple[str, list]]:
    out = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        key = {"rank": "lora_rank", "mb": "micro_batch"}.get(key, key)
        if not sep or key not in VARY_KEYS or not values:
            raise BenchError(f"--vary {item!r}: write KEY=V1,V2 with KEY one of {', '.join(sorted(VARY_KEYS))}")
        try:
            out.append((key, [VARY_KEYS[key](v) for v in values.split(",")]))
        except ValueError:
            raise BenchError(f"--vary {item!r}: {key} takes numbers") from None
    return out


def _argv_for(args: argparse.Namespace, combo: dict) -> list[str]:
    """The `pretrain`/`finetune` command line of one sweep point (each point runs in its own process, so memory
    left by one configuration cannot distort the next)."""
    method = combo.get("method", args.method)
    cmd = ["pretrain" if method == "full" else "finetune"]
    if method != "full":
        cmd += ["--method", method, "--rank", str(combo.get("lora_rank", args.lora_rank))]
    flags = {"model": args.model, "layers": args.layers, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
             "grad_accum": args.grad_accum, "steps": args.steps, "warmup": args.warmup, "attn": args.attn,
             "recompute": args.recompute, "precision": args.precision, "optimizer": args.optimizer,
             "zero": args.zero, "offload": args.offload, "strategy": args.strategy, "device": args.device}
    for key, value in {**flags, **{k: v for k, v in combo.items() if k in flags}}.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    if combo.get("compile", args.compile):
        cmd.append("--compile")
    return cmd


def cmd_sweep(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    grid = parse_vary(args.vary or [])
    if not grid:
        raise BenchError("sweep needs at least one --vary KEY=V1,V2, e.g. --vary recompute=none,full")
    keys = [k for k, _ in grid]
    points = []
    for values in itertools.product(*(v for _, v in grid)):
        combo = dict(zip(keys, values))
        argv = _argv_for(args, combo)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            proc = subprocess.run([sys.executable, "-m", "training_bench", *argv, "--quiet", "--out", str(out)],
                                  capture_output=True, text=True)
            result = json.loads(out.read_text()) if proc.returncode == 0 and out.exists() else None
        error = None if result else ((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
        points.append({"vary": combo, "argv": argv, "result": result, "error": error})
        label = ", ".join(f"{k}={v}" for k, v in combo.items())
        print(f"sweep: {label}: " + (f"{result['throughput']['tokens_per_s']:,.0f} tok/s" if result else error),
              file=sys.stderr)
    base = next((p["result"] for p in points if p["result"]), None)
    rows = []
    for p in points:
        r = p["result"]
        label = ", ".join(f"{k}={v}" for k, v in p["vary"].items())
        if r is None:
            rows.append([label, "failed", "", "", "", "", "", p["error"][:80]])
            continue
        peak = r["memory"].get("peak_bytes")
        rel_t = r["steps"]["step_ms_median"] / base["steps"]["step_ms_median"]
        rel_m = (peak / base["memory"]["peak_bytes"]) if peak and base["memory"].get("peak_bytes") else None
        rows.append([label, f"{r['throughput']['tokens_per_s']:,.0f}", f"{r['flops']['model_tflops_per_gpu']:.1f}",
                     f"{r['mfu']['value']:.1%}" if r["mfu"] else "-", f"{r['steps']['step_ms_median']:.1f}",
                     f"{rel_t:.2f}x", "-" if peak is None else f"{peak / 2**30:.2f}",
                     "-" if rel_m is None else f"{rel_m:.2f}x"])
    print(tabulate(rows, headers=["configuration", "tok/s", "TFLOP/s", "MFU", "step ms", "time vs first",
                                  "peak GiB", "memory vs first"], disable_numparse=True))
    report = {"sweep": grid, "points": points, "command": sys.argv}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if all(p["result"] for p in points) else 1
