"""The paper's module-wise analysis: one decoder layer's time split into attention, MLP, norms and
communication, for tensor-parallel degree t (ops measured at the t-sharded shapes on one device)."""

from __future__ import annotations

from dataclasses import dataclass

from scenarios.catalog import GPUSpec, ModelSpec

MODULE_OF = {"qkv": "attention", "rope": "attention", "attention": "attention", "o_proj": "attention",
             "gate_up": "mlp", "silu_mul": "mlp", "down": "mlp", "rmsnorm": "norms"}


@dataclass(frozen=True)
class CommModel:
    """Time of one all-reduce of `nbytes` across t GPUs: from a measured comm table, else the catalog link."""

    source: str
    table: tuple[tuple[int, float], ...] = ()  # (bytes, seconds) for all_reduce at this t, sorted
    link_gbs: float = 0.0
    latency_s: float = 8e-6

    def all_reduce_s(self, nbytes: int, t: int) -> float:
        if t == 1:
            return 0.0
        if self.table:
            import numpy as np

            sizes = np.array([s for s, _ in self.table], dtype=float)
            times = np.array([x for _, x in self.table])
            if nbytes >= sizes[-1]:
                return float(times[-1] * nbytes / sizes[-1])
            return float(np.interp(nbytes, sizes, times))
        return self.latency_s + 2 * (t - 1) / t * nbytes / (self.link_gbs * 1e9)


def comm_from_catalog(gpu: GPUSpec) -> CommModel:
    return CommModel(source=f"estimated: ring all-reduce at the catalog's {gpu.interconnect_gbs:g} GB/s per direction "
                            f"({gpu.interconnect}) + 8 us per call", link_gbs=gpu.interconnect_gbs)


def comm_from_results(results: list[dict], t: int) -> CommModel | None:
    rows = sorted((r["bytes"], r["time_us"] / 1e6) for r in results if r["op"] == "all_reduce" and r["world"] == t)
    return CommModel(source=f"measured all_reduce across {t} ranks", table=tuple(rows)) if rows else None


def layer_breakdown(op_rows: list[dict], model: ModelSpec, tokens: int, t: int, comm: CommModel) -> dict:
    """Sum the measured per-op medians of one phase into modules, plus 2 all-reduces of tokens x hidden."""
    modules = {"attention": 0.0, "mlp": 0.0, "norms": 0.0}
    for row in op_rows:
        if "median_ms" not in row:
            continue
        key = "attention" if row["name"].startswith("attention") else row["name"]
        module = MODULE_OF.get(key)
        if module is None:
            continue
        count = 2 if key == "rmsnorm" else 1  # two norms per layer
        modules[module] += count * row["median_ms"] / 1e3
    message = tokens * model.hidden_size * 2
    modules["communication"] = 2 * comm.all_reduce_s(message, t)
    total = sum(modules.values())
    return {
        "tp": t,
        "tokens": tokens,
        "per_layer_ms": {k: v * 1e3 for k, v in modules.items()},
        "share": {k: (v / total if total else None) for k, v in modules.items()},
        "layer_ms": total * 1e3,
        "model_layers_ms": total * 1e3 * model.num_layers,
        "communication_source": comm.source,
    }
