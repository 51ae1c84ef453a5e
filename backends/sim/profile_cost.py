"""Iteration time from a measured hardware profile (`python -m training_bench micro profile`).

With a profile of the same model, one iteration = layers x (two RMSNorms, QKV, RoPE, attention, O, gate/up,
SiLU-and-multiply, down) + embedding + LM head, each from the profile's per-operator tables at the step's
token count (linear interpolation; linear scaling beyond the largest point), sharded operators divided by
the TP degree, plus the roofline's all-reduce and per-step overhead. Prefill attention is looked up by
causal query-key pairs, decode attention by KV tokens read. With a profile of another model, only its
measured ceilings are used (the roofline with measured GEMM throughput and copy bandwidth in place of the
datasheet's, efficiencies 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from backends.errors import BackendError
from backends.sim.roofline import EngineCostParams, IterationCost, SeqWork, iteration_cost, with_launch
from scenarios.catalog import GPUSpec, ModelSpec

PROFILE_FORMAT = "dissect-profile"
SUPPORTED_VERSIONS = (1,)
LAYER_OPS = ("qkv", "o_proj", "gate_up", "down", "rmsnorm", "rope", "silu_mul")
SHARDED = {"qkv", "o_proj", "gate_up", "down", "rope", "silu_mul", "lm_head"}


def _squash(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def _gpu_family(key: str) -> str:
    """The part of a catalog key a device name contains: h100-sxm -> h100, rtx4090 -> rtx4090."""
    return _squash(key.split("-")[0])


class _Table:
    """Linear interpolation between measured points; below the smallest point its time holds (small kernels
    are launch-bound), beyond the largest the time scales in proportion."""

    def __init__(self, x: list[float], y: list[float], what: str):
        if not x or len(x) != len(y):
            raise BackendError(f"profile table {what} is empty or malformed; re-run `training_bench micro profile`")
        order = np.argsort(x)
        self.x = np.asarray(x, dtype=float)[order]
        self.y = np.asarray(y, dtype=float)[order]

    def __call__(self, v: float) -> float:
        if v <= 0:
            return 0.0
        if v > self.x[-1]:
            return float(self.y[-1] * v / self.x[-1])
        return float(np.interp(v, self.x, self.y))


@dataclass
class Profile:
    path: str
    model: str
    device: str
    gemm_tflops: float
    copy_gbs: float
    tables: dict[str, _Table]

    @classmethod
    def load(cls, path: str | Path) -> "Profile":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except OSError as exc:
            raise BackendError(f"cannot read profile {p}: {exc.strerror}; check --profile") from None
        except json.JSONDecodeError as exc:
            raise BackendError(f"profile {p} is not JSON ({exc.msg}); give a file from `training_bench micro profile`") from None
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise BackendError(f"{p} is not a dissect profile; make one with `python -m training_bench micro profile`")
        if data.get("version") not in SUPPORTED_VERSIONS:
            raise BackendError(f"profile {p} has version {data.get('version')}; this sim reads {SUPPORTED_VERSIONS}")
        try:
            ops = data["ops"]
            tables = {name: _Table(ops[name]["tokens"], ops[name]["seconds"], name) for name in (*LAYER_OPS, "embedding", "lm_head")}
            pre = ops["attention_prefill"]
            tables["attention_prefill"] = _Table([s * (s + 1) / 2 for s in pre["tokens"]], pre["seconds"], "attention_prefill")
            dec = ops["attention_decode"]
            tables["attention_decode"] = _Table(dec["kv_tokens"], dec["seconds"], "attention_decode")
            ceilings = data["ceilings"]
            return cls(str(p), data["model"], data["device"], float(ceilings["gemm"]["tflops"]),
                       float(ceilings["copy"]["gbs"]), tables)
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"profile {p} lacks {exc}; re-run `training_bench micro profile`") from None

    def describe(self, model: ModelSpec) -> str:
        if self.model == model.name:
            return f"measured profile {self.path} ({self.device}): per-operator tables for {self.model}"
        return (f"measured profile {self.path} ({self.device}): ceilings only (GEMM {self.gemm_tflops:.0f} TFLOP/s, "
                f"copy {self.copy_gbs:.0f} GB/s); its operator tables are for {self.model}, not {model.name}")

    def device_mismatch(self, gpu: GPUSpec) -> str | None:
        """Why this profile does not stand for `gpu`, or None when it was measured on that GPU. Its step times are
        the measured device's: a profile made on a CPU and loaded as an H100 made a 100-request run take hours."""
        if _gpu_family(gpu.key) in _squash(self.device):
            return None
        return (f"profile {self.path} was measured on {self.device!r}, not on the {gpu.key} ({gpu.name}) this sim "
                f"stands for, so its timings are that device's; measure one on a {gpu.key} "
                f"(`python -m training_bench micro profile` there) or drop --profile")

    def ceiling_gpu(self, gpu: GPUSpec) -> GPUSpec:
        """The catalog GPU with datasheet peaks replaced by this profile's measured ceilings."""
        return replace(gpu, peak_bf16_tflops=self.gemm_tflops, hbm_bandwidth_gbs=self.copy_gbs)

    def iteration_cost(self, model: ModelSpec, gpu: GPUSpec, tp: int, work: Iterable[SeqWork],
                       params: EngineCostParams) -> IterationCost:
        work = list(work)
        if self.model != model.name:
            measured = replace(params, memory_efficiency=1.0, compute_efficiency=1.0)
            return iteration_cost(model, self.ceiling_gpu(gpu), tp, work, measured)
        tokens = sum(w.new_tokens for w in work)
        if tokens == 0:
            return IterationCost(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        logits = sum(1 for w in work if w.emits_token)
        t = self.tables
        layer = sum(t[name](tokens) / (tp if name in SHARDED else 1) for name in LAYER_OPS)
        layer += t["rmsnorm"](tokens)  # two norms per layer
        pairs = sum(w.new_tokens * w.context + w.new_tokens * (w.new_tokens + 1) / 2 for w in work if w.new_tokens > 1)
        kv_read = sum(w.context + 1 for w in work if w.new_tokens == 1)
        layer += (t["attention_prefill"](pairs) + t["attention_decode"](kv_read)) / tp
        compute = model.num_layers * layer + t["embedding"](tokens) + t["lm_head"](logits) / tp
        # The all-reduce term and the CPU side from the roofline. The profile's operators were timed launched one
        # by one, so the GPU side already holds the gaps between kernels that a step off the CUDA graph shows.
        roof = iteration_cost(model, gpu, tp, work, params)
        return with_launch(IterationCost(roof.flops, roof.bytes_per_gpu, compute, 0.0, roof.comm_s, params.step_overhead_s),
                           model, work, params)
