"""Data and small validating loaders: the model and GPU catalog (catalog.py), workload scenario files (scenario.py
and the YAML files beside it) and sample datasets (data/)."""

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
