"""The fastest measured configuration that fits: what `sweep` recommends from its rows (or from a results file).

Only measured rows count: a configuration that failed (out of memory, unsupported) is not a candidate, and one
measured on another GPU is not either (speed does not transfer). A row fits a GPU when its measured peak memory
is at most the GPU's catalog memory less HEADROOM (the CUDA context, NCCL buffers and allocator fragmentation
that torch's peak does not count). Rows are grouped by what they train (method, model, depth), since LoRA being
faster than full training is not a recommendation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scenarios.catalog import GPUSpec, gpu_for_device
from training_bench.errors import BenchError

HEADROOM_GIB = 2.0


@dataclass(frozen=True)
class Row:
    label: str
    result: dict

    @property
    def tokens_per_s(self) -> float:
        return self.result["throughput"]["tokens_per_s"]

    @property
    def peak_bytes(self) -> int | None:
        return self.result["memory"].get("peak_bytes")

    @property
    def group(self) -> tuple[str, str, int]:
        r = self.result
        return r["config"]["method"], r["model"]["name"], r["model"]["layers"]


def rows_from_file(path: str) -> list[Row]:
    """Measured rows of a `sweep --output` file or a benchmarks/training_matrix.py file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"--from {path}: cannot read it as JSON ({exc})") from None
    if "points" in data:
        return [Row(p.get("label") or ", ".join(f"{k}={v}" for k, v in p["vary"].items()), p["result"])
                for p in data["points"] if p.get("result")]
    if "runs" in data:
        return [Row(r["name"], r["result"]) for r in data["runs"] if r.get("result")]
    raise BenchError(f"--from {path}: neither a sweep result (points) nor a training_matrix result (runs)")


def fits(row: Row, gpu: GPUSpec | None) -> bool:
    if gpu is None or row.peak_bytes is None:
        return True  # it ran on this device, so it fit
    return row.peak_bytes <= (gpu.memory_gib - HEADROOM_GIB) * 2**30


def measured_on(row: Row, gpu: GPUSpec | None) -> bool:
    if gpu is None:
        return True
    found = gpu_for_device(row.result.get("device", ""))
    return found is not None and found.key == gpu.key


def recommend(rows: list[Row], gpu: GPUSpec | None = None) -> dict[tuple[str, str, int], Row]:
    """Per group, the row with the most tokens/s among those measured on `gpu` that fit in its memory."""
    best: dict[tuple[str, str, int], Row] = {}
    for row in rows:
        if not (measured_on(row, gpu) and fits(row, gpu)):
            continue
        if row.group not in best or row.tokens_per_s > best[row.group].tokens_per_s:
            best[row.group] = row
    return best


def describe(row: Row, gpu: GPUSpec | None) -> str:
    r = row.result
    method, model, layers = row.group
    depth = f"{layers} of {r['model']['full_layers']} layers" if r["model"]["truncated"] else f"{layers} layers"
    mfu = f", MFU {r['mfu']['value']:.1%} of the bf16 peak" if r.get("mfu") else ""
    if r.get("mfu") and "of_fp8_peak" in r["mfu"]:
        mfu += f" ({r['mfu']['of_fp8_peak']:.1%} of the fp8 peak)"
    peak = row.peak_bytes
    mem = "" if peak is None else f", peak {peak / 2**30:.1f} GiB" + (f" of {gpu.memory_gib:g}" if gpu else "")
    where = gpu.key if gpu else r.get("device", "this device")
    return (f"fastest that fits for {method} {model} ({depth}) on {where}: {row.label} -> "
            f"{row.tokens_per_s:,.0f} tok/s{mfu}{mem}")
