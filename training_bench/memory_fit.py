"""Will a run fit? Checked before anything is allocated, so a 7B run on a laptop says so in one line instead of
dying in the allocator (or in the kernel's OOM killer) a minute later.

The estimate is `train_config.memory_estimate_gib`. Weights, gradients and optimizer state are exact counts; the
activation figure is a per-token fit measured on the H100, so it decides only when it is far over: a run is
refused when the exact part alone exceeds the memory there is, or when the whole estimate exceeds it by more
than ACTIVATION_SLACK.
"""

from __future__ import annotations

from pathlib import Path

from training_bench.errors import BenchError

GiB = 2**30
# The activation estimate was within ~20% of the measured peaks of results/h100-training-*.json; beyond 30% over
# the memory there is, a run would not fit even if the estimate were that far off.
ACTIVATION_SLACK = 1.3


def _cgroup_limit_bytes() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def available_bytes(device) -> tuple[int, str]:
    """Memory a run can still take on `device`, and where the figure came from."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free GPU memory on {torch.cuda.get_device_name(device)}"
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    limit = _cgroup_limit_bytes()
    if avail is None and limit is None:
        return 2**62, "unknown (no /proc/meminfo)"
    if limit is not None and (avail is None or limit < avail):
        return limit, "the cgroup memory limit"
    return avail, "MemAvailable of /proc/meminfo"


def shard_factors(strategy: str, zero: int, world: int) -> tuple[int, int, int]:
    """How many ways (weights, gradients, optimizer state) are split across ranks."""
    if world <= 1:
        return 1, 1, 1
    if strategy == "fsdp" or zero == 3:
        return world, world, world
    if zero == 2:
        return 1, world, world
    if zero == 1:
        return 1, 1, world
    return 1, 1, 1


def check_fits(estimate_gib: dict[str, float], avail: int, source: str, where: str, weight_shards: int = 1,
               grad_shards: int = 1, opt_shards: int = 1, weights_offloaded: bool = False) -> dict:
    """Raise BenchError naming the fix when the run cannot fit; return what was compared (for the result JSON)."""
    exact = (0 if weights_offloaded else estimate_gib["weights"] / weight_shards) + \
        estimate_gib["gradients"] / grad_shards + estimate_gib["optimizer"] / opt_shards
    total = exact + estimate_gib["activations"]
    checked = {"estimate_gib": round(total, 2), "exact_part_gib": round(exact, 2),
               "available_gib": round(avail / GiB, 2), "available_source": source}
    limit = avail / GiB
    if exact > limit or total > ACTIVATION_SLACK * limit:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in estimate_gib.items())
        raise BenchError(f"this run will not fit {where}: it needs about {total:.1f} GiB ({parts}) and "
                         f"{limit:.1f} GiB are available ({source}); try --model tiny, --layers N, a smaller "
                         "--micro-batch or --seq-len, --recompute full, or --skip-fit-check to try anyway")
    return checked
