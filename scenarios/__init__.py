"""The catalog (models, GPUs) and, later, workload scenarios, as data plus a small validating loader."""

from scenarios.catalog import (
    CatalogError,
    GPUSpec,
    ModelSpec,
    get_gpu,
    get_model,
    list_gpus,
    list_models,
)

__all__ = ["CatalogError", "GPUSpec", "ModelSpec", "get_gpu", "get_model", "list_gpus", "list_models"]
