"""Which torch device a run uses: one rule for the micro-benchmarks and the training runs."""

from __future__ import annotations

from training_bench.errors import BenchError


def pick_device(choice: str, local_rank: int | None = None):
    """`auto` takes the GPU when one is visible. With `local_rank` (a torchrun process) the process binds to its
    own GPU, so collectives and allocations never land on GPU 0 by default."""
    import torch

    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise BenchError("--device cuda, but no CUDA GPU is visible; use --device cpu")
        if local_rank is None:
            return torch.device("cuda")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
