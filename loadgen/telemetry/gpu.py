"""GPU telemetry from NVML (nvidia-ml-py): utilisation, memory, power, clocks, sampled into gpu.jsonl.

Runs in a thread so that a slow NVML call never delays the load path. Without NVML or without GPUs it
does nothing and says why in one line.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path

from loadgen.outputs.timeseries import energy_joules


def nvml_unavailable_reason() -> str | None:
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as exc:  # NVMLError subclasses; the library exposes no single base import path
        return f"NVML cannot start ({exc})"
    return None if count else "NVML sees no GPU"


class GPUSampler:
    """Samples every GPU every `interval_s` into `path` (one JSON line per GPU per sample)."""

    def __init__(self, path: Path, interval_s: float = 0.5):
        self.path = path
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self.samples = 0
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import pynvml

        try:
            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            names = [pynvml.nvmlDeviceGetName(h) for h in handles]
        except Exception as exc:
            self.error = f"NVML: {exc}"
            return
        with open(self.path, "a", encoding="utf-8") as f:
            while not self._stop.is_set():
                t_ns = time.perf_counter_ns()  # the load generator's clock: aligned with requests.jsonl
                for i, h in enumerate(handles):
                    try:
                        util = pynvml.nvmlDeviceGetUtilizationRates(h)
                        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                        row = {
                            "t_ns": t_ns, "gpu": i, "name": names[i] if isinstance(names[i], str) else names[i].decode(),
                            "util_pct": util.gpu, "mem_util_pct": util.memory,
                            "mem_used_mib": mem.used / 2**20, "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000,
                            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                            "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                        }
                    except Exception as exc:
                        self.error = f"NVML: {exc}"
                        continue
                    f.write(json.dumps(row) + "\n")
                f.flush()
                self.samples += 1
                self._stop.wait(self.interval_s)
        pynvml.nvmlShutdown()


def read_gpu_samples(path: Path, origin_ns: int | None = None) -> list[dict]:
    """Samples with t_s = seconds since the run's origin (or since the first sample when none is given)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if rows:
        origin = origin_ns if origin_ns is not None else min(r["t_ns"] for r in rows)
        for r in rows:
            r["t_s"] = (r["t_ns"] - origin) / 1e9
    return rows


def energy_summary(samples: list[dict], window: tuple[float, float], output_tokens: int) -> dict | None:
    """Energy over the measured window (all GPUs), average power, and joules per output token."""
    per_gpu: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for s in samples:
        if window[0] <= s["t_s"] <= window[1]:
            per_gpu[s["gpu"]].append((s["t_s"], s["power_w"]))
    if not per_gpu or all(len(v) < 2 for v in per_gpu.values()):
        return None
    energy = sum(energy_joules(v) for v in per_gpu.values())
    span = max(v[-1][0] - v[0][0] for v in per_gpu.values())
    return {
        "gpus": len(per_gpu),
        "energy_j": energy,
        "avg_power_w": energy / span if span > 0 else None,
        "joules_per_output_token": energy / output_tokens if output_tokens else None,
        "method": "trapezoid rule over NVML power samples in the measured window, summed over GPUs",
    }
