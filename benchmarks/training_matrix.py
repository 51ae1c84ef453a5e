"""The training measurements of the paper's matrix on one GPU, each configuration in its own process, into one JSON
(rewritten after every run, so a matrix cut off midway keeps the runs that finished) and a table.

    python benchmarks/training_matrix.py --set pretrain --output results/h100-training-pretrain.json
    python benchmarks/training_matrix.py --set finetune --output results/h100-training-finetune.json
    python benchmarks/training_matrix.py --set offload --output results/h100-training-offload.json

(`python -m training_bench sweep` does the same for a grid of options and recommends the fastest that fits.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
P7 = ["pretrain", "--model", "7b", "--layers", "8", "--seq-len", "2048", "--micro-batch", "4"]

SETS: dict[str, list[tuple[str, list[str]]]] = {
    "pretrain": [
        # the reference point: HF Llama-2-7B shape, 8 layers, 4 x 2048, SDPA, fused AdamW, no recompute
        ("7b-8l-sdpa", [*P7, "--attn", "sdpa"]),
        ("7b-8l-sdpa-flash", [*P7, "--attn", "sdpa-flash"]),
        ("7b-8l-sdpa-cudnn", [*P7, "--attn", "sdpa-cudnn"]),
        ("7b-8l-sdpa-efficient", [*P7, "--attn", "sdpa-efficient"]),
        ("7b-8l-sdpa-math", [*P7, "--attn", "sdpa-math"]),
        ("7b-8l-eager", [*P7, "--attn", "eager"]),
        ("7b-8l-sdpa-flash-recompute", [*P7, "--attn", "sdpa-flash", "--recompute", "full"]),
        ("7b-8l-eager-recompute", [*P7, "--attn", "eager", "--recompute", "full"]),
        ("7b-8l-sdpa-compile", [*P7, "--attn", "sdpa", "--compile"]),
        ("7b-32l-sdpa-flash-recompute-mb2", ["pretrain", "--model", "7b", "--seq-len", "2048", "--micro-batch", "2",
                                              "--attn", "sdpa-flash", "--recompute", "full"]),
        ("7b-32l-sdpa-flash-mb1", ["pretrain", "--model", "7b", "--seq-len", "2048", "--micro-batch", "1",
                                   "--attn", "sdpa-flash"]),
    ],
    "finetune": [
        ("7b-lora-r16-mb4x2048", ["finetune", "--model", "7b", "--method", "lora", "--rank", "16", "--seq-len", "2048",
                                  "--micro-batch", "4", "--attn", "sdpa-flash"]),
        ("7b-lora-r16-mb4x2048-recompute", ["finetune", "--model", "7b", "--method", "lora", "--rank", "16",
                                            "--seq-len", "2048", "--micro-batch", "4", "--attn", "sdpa-flash",
                                            "--recompute", "full"]),
        ("7b-qlora-r16-mb4x1024", ["finetune", "--model", "7b", "--method", "qlora", "--rank", "16", "--seq-len",
                                   "1024", "--micro-batch", "4", "--attn", "sdpa-flash"]),
        ("7b-qlora-r16-mb4x2048-recompute", ["finetune", "--model", "7b", "--method", "qlora", "--rank", "16",
                                             "--seq-len", "2048", "--micro-batch", "4", "--attn", "sdpa-flash",
                                             "--recompute", "full"]),
        ("13b-qlora-r16-mb4x2048-recompute", ["finetune", "--model", "13b", "--method", "qlora", "--rank", "16",
                                              "--seq-len", "2048", "--micro-batch", "4", "--attn", "sdpa-flash",
                                              "--recompute", "full"]),
        ("7b-full-ft-adamw8bit-recompute", ["finetune", "--model", "7b", "--method", "full", "--optimizer",
                                            "adamw8bit", "--seq-len", "2048", "--micro-batch", "2", "--attn",
                                            "sdpa-flash", "--recompute", "full"]),
    ],
    "offload": [
        ("7b-8l-zero2-offload", ["pretrain", "--model", "7b", "--layers", "8", "--seq-len", "2048", "--micro-batch",
                                 "4", "--attn", "sdpa-flash", "--zero", "2", "--offload", "optimizer"]),
        ("7b-full-ft-zero2-offload-recompute", ["finetune", "--model", "7b", "--method", "full", "--seq-len", "2048",
                                                "--micro-batch", "2", "--attn", "sdpa-flash", "--recompute", "full",
                                                "--zero", "2", "--offload", "optimizer", "--steps", "4",
                                                "--warmup", "1"]),
    ],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", choices=sorted(SETS), required=True)
    p.add_argument("--only", help="comma-separated run names to keep")
    p.add_argument("--steps", default="10")
    p.add_argument("--timeout", type=float, default=420.0, help="per run, seconds")
    p.add_argument("--output", "--out", dest="output", required=True, help="results JSON, rewritten after every run")
    args = p.parse_args()
    runs = SETS[args.set]
    if args.only:
        keep = set(args.only.split(","))
        runs = [r for r in runs if r[0] in keep]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"benchmark": "training_matrix", "set": args.set, "runs": []}
    for name, argv in runs:
        cmd = [sys.executable, "-m", "training_bench", *argv, "--quiet"]
        if "--steps" not in argv:
            cmd += ["--steps", args.steps]
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result_path = Path(tmp) / "result.json"
            try:
                proc = subprocess.run([*cmd, "--output", str(result_path)], cwd=ROOT, capture_output=True, text=True,
                                      timeout=args.timeout)
                code, stderr = proc.returncode, proc.stderr
            except subprocess.TimeoutExpired:
                code, stderr = "timeout", f"timed out after {args.timeout:.0f} s"
            result = json.loads(result_path.read_text()) if code == 0 and result_path.exists() else None
        entry: dict = {"name": name, "command": ["python", "-m", "training_bench", *cmd[3:]], "returncode": code,
                       "wall_s": time.perf_counter() - t0, "result": result}
        if entry["result"] is None:
            lines = [ln for ln in (stderr or "").splitlines() if ln.strip()]
            entry["error"] = lines[-1] if lines else f"exit {code}"
            entry["stderr_tail"] = "\n".join(lines[-15:])
        report["runs"].append(entry)
        out.write_text(json.dumps(report, indent=1))
        r = entry["result"]
        if r:
            mem = r["memory"].get("peak_bytes")
            print(f"{name:40} {r['throughput']['tokens_per_s']:9,.0f} tok/s {r['flops']['model_tflops_per_gpu']:7.1f} "
                  f"TFLOP/s  MFU {r['mfu']['value'] if r['mfu'] else 0:.1%}  step {r['steps']['step_ms_median']:8.1f} ms"
                  f"  peak {mem / 2**30 if mem else 0:6.1f} GiB  build {r['build_s']:.0f}s", flush=True)
        else:
            print(f"{name:40} FAILED: {entry['error']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
