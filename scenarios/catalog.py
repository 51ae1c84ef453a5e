"""Load and validate the model and GPU catalog (YAML files beside this module).

The catalog is data so that adding a GPU or a model needs no code; the loader checks every field so a
typo in a YAML file fails loudly with the file and field named, not later as a wrong number.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CATALOG_DIR = Path(__file__).parent / "catalog"
BF16_BYTES = 2


class CatalogError(ValueError):
    """A user-visible catalog problem: unknown name or an invalid catalog file."""


@dataclass(frozen=True)
class ModelSpec:
    """A Llama-shaped decoder: enough to count parameters, FLOPs and KV-cache bytes exactly."""

    name: str
    hf_id: str | None
    aliases: tuple[str, ...]
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    max_context: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def layer_params(self) -> int:
        """Weights of one decoder layer: q, k, v, o projections, gate/up/down MLP, two RMSNorm vectors."""
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attn = h * h + 2 * h * kv + h * h
        mlp = 3 * h * self.intermediate_size
        return attn + mlp + 2 * h

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def param_count(self) -> int:
        """All parameters (embedding, layers, final norm, LM head)."""
        return (
            self.embedding_params
            + self.num_layers * self.layer_params
            + self.hidden_size
            + self.lm_head_params
        )

    @property
    def matmul_params(self) -> int:
        """Parameters that take part in matrix multiplies per token (layers + LM head; not the embedding lookup)."""
        return self.num_layers * self.layer_params + self.vocab_size * self.hidden_size

    def weight_bytes(self, dtype_bytes: int = BF16_BYTES) -> int:
        return self.param_count * dtype_bytes

    def kv_bytes_per_token(self, dtype_bytes: int = BF16_BYTES) -> int:
        """K and V for every layer of one token."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes


@dataclass(frozen=True)
class GPUSpec:
    """Vendor peak figures for one GPU; units in the field names."""

    key: str
    name: str
    aliases: tuple[str, ...]
    peak_bf16_tflops: float
    hbm_bandwidth_gbs: float
    memory_gib: float
    interconnect: str
    interconnect_gbs: float
    # An EXAMPLE rental price in US dollars per GPU-hour, for `loadgen plan`'s cost column when no --gpu-price is
    # given; not a quote (prices vary by provider, region and commitment).
    example_price_per_gpu_hour: float | None = None
    # Dense FP8 tensor-core peak (FP32 accumulate) where the GPU has FP8 tensor cores: the ceiling an FP8 training
    # run's utilisation is also stated against (its MFU is stated against the bf16 peak first, comparable to bf16 rows).
    peak_fp8_tflops: float | None = None

    @property
    def peak_flops(self) -> float:
        return self.peak_bf16_tflops * 1e12

    @property
    def hbm_bandwidth(self) -> float:
        """Bytes per second."""
        return self.hbm_bandwidth_gbs * 1e9

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    @property
    def interconnect_bandwidth(self) -> float:
        """Bytes per second, per GPU, per direction."""
        return self.interconnect_gbs * 1e9


_MODEL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "hf_id": (str, type(None)),
    "aliases": list,
    "hidden_size": int,
    "intermediate_size": int,
    "num_layers": int,
    "num_heads": int,
    "num_kv_heads": int,
    "vocab_size": int,
    "max_context": int,
    "rope_theta": (int, float),
    "rms_norm_eps": (int, float),
    "tie_word_embeddings": bool,
}

_GPU_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "aliases": list,
    "peak_bf16_tflops": (int, float),
    "hbm_bandwidth_gbs": (int, float),
    "memory_gib": (int, float),
    "interconnect": str,
    "interconnect_gbs": (int, float),
}
_GPU_OPTIONAL: dict[str, type | tuple[type, ...]] = {"example_price_per_gpu_hour": (int, float),
                                                     "peak_fp8_tflops": (int, float)}


def _check_fields(path: Path, key: str, entry: Any, fields: dict[str, type | tuple[type, ...]],
                  optional: dict[str, type | tuple[type, ...]] | None = None) -> None:
    if not isinstance(entry, dict):
        raise CatalogError(f"{path.name}: entry {key!r} must be a mapping of fields")
    missing = [f for f in fields if f not in entry]
    if missing:
        raise CatalogError(f"{path.name}: entry {key!r} lacks field(s) {', '.join(missing)}")
    known = {**fields, **(optional or {})}
    unknown = [f for f in entry if f not in known]
    if unknown:
        raise CatalogError(f"{path.name}: entry {key!r} has unknown field(s) {', '.join(unknown)}")
    for field, typ in known.items():
        if field not in entry:
            continue
        value = entry[field]
        # bool is an int subclass: a bool where a number is wanted is a typo worth catching.
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
            raise CatalogError(f"{path.name}: {key}.{field} = {value!r} has the wrong type")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise CatalogError(f"{path.name}: {key}.{field} must be positive, got {value!r}")


def _check_aliases(path: Path, key: str, aliases: list) -> None:
    if not all(isinstance(a, str) for a in aliases):
        raise CatalogError(f"{path.name}: {key}.aliases must be strings (quote numbers such as \"4090\")")


def _read_section(path: Path, section: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(section), dict):
        raise CatalogError(f"{path.name}: expected a top-level '{section}:' mapping")
    return data[section]


def load_models(path: Path = CATALOG_DIR / "models.yaml") -> dict[str, ModelSpec]:
    models: dict[str, ModelSpec] = {}
    for key, entry in _read_section(path, "models").items():
        _check_fields(path, key, entry, _MODEL_FIELDS)
        _check_aliases(path, key, entry["aliases"])
        if entry["hidden_size"] % entry["num_heads"] or entry["num_heads"] % entry["num_kv_heads"]:
            raise CatalogError(f"{path.name}: {key}: hidden_size, num_heads and num_kv_heads must divide evenly")
        models[key] = ModelSpec(name=key, **{**entry, "aliases": tuple(entry["aliases"])})
    return models


def load_gpus(path: Path = CATALOG_DIR / "gpus.yaml") -> dict[str, GPUSpec]:
    gpus: dict[str, GPUSpec] = {}
    for key, entry in _read_section(path, "gpus").items():
        _check_fields(path, key, entry, _GPU_FIELDS, _GPU_OPTIONAL)
        _check_aliases(path, key, entry["aliases"])
        gpus[key] = GPUSpec(key=key, **{**entry, "aliases": tuple(entry["aliases"])})
    return gpus


@functools.cache
def _models() -> dict[str, ModelSpec]:
    return load_models()


@functools.cache
def _gpus() -> dict[str, GPUSpec]:
    return load_gpus()


def _lookup(kind: str, name: str, table: dict) -> Any:
    wanted = name.strip().lower()
    for key, spec in table.items():
        if wanted == key or wanted in spec.aliases:
            return spec
    names = ", ".join(sorted(list(table) + [a for s in table.values() for a in s.aliases]))
    raise CatalogError(f"unknown {kind} {name!r}; choose one of: {names}")


def get_model(name: str) -> ModelSpec:
    return _lookup("model", name, _models())


def get_gpu(name: str) -> GPUSpec:
    return _lookup("GPU", name, _gpus())


def gpu_for_device(device_name: str) -> GPUSpec | None:
    """The catalog GPU a driver-reported name stands for ("NVIDIA H100 80GB HBM3" -> h100-sxm), or None."""
    words = set(device_name.upper().replace("-", " ").split())
    for gpu in _gpus().values():
        keys = {gpu.key.upper(), *(a.upper() for a in gpu.aliases)}
        model_word = next((w for w in gpu.name.upper().split() if any(c.isdigit() for c in w)), None)
        if model_word and model_word in words:
            return gpu
        if any(k in words for k in keys):
            return gpu
    return None


def list_models() -> list[ModelSpec]:
    return list(_models().values())


def list_gpus() -> list[GPUSpec]:
    return list(_gpus().values())
