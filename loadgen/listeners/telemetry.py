"""What the server and its GPUs did during the run: the server-metrics scraper and the GPU sampler, each started
before the first request, stopped with the load, and summarised into the run's summary."""

from __future__ import annotations

import sys
from pathlib import Path

from loadgen.run_events import RunResult
from loadgen.telemetry.gpu import GPUSampler, energy_summary, nvml_unavailable_reason, read_gpu_samples
from loadgen.telemetry.server_metrics import (
    MetricsScraper,
    prefix_cache_warning,
    read_server_metrics,
    summarize_server_metrics,
)


class ServerMetrics:
    """The server's /metrics page every `interval_s` into server_metrics.jsonl; its summary as "server_metrics"."""

    def __init__(self, url: str, run_dir: Path, interval_s: float, headers: dict[str, str]):
        self.scraper = MetricsScraper(url, run_dir / "server_metrics.jsonl", interval_s, headers)

    async def started(self) -> None:
        await self.scraper.start()

    async def stopped(self, outcome) -> None:
        await self.scraper.stop()

    def finished(self, result: RunResult) -> None:
        server = summarize_server_metrics(read_server_metrics(self.scraper.path))
        result.summary["server_metrics"] = server
        warning = prefix_cache_warning(server)
        if warning:
            result.summary.setdefault("warnings", []).append(warning)


class GpuTelemetry:
    """--gpu-telemetry: NVML samples into gpu.jsonl, and the measured phase's energy as "energy". Skipped, with
    the reason on stderr, against the simulated engine (it uses no GPU) or where NVML is unavailable."""

    def __init__(self, run_dir: Path, interval_s: float, simulated: bool):
        self.path, self.interval_s, self.simulated = run_dir / "gpu.jsonl", interval_s, simulated
        self.sampler: GPUSampler | None = None

    def started(self) -> None:
        reason = "the simulated engine uses no GPU" if self.simulated else nvml_unavailable_reason()
        if reason:
            print(f"GPU telemetry: skipped ({reason})", file=sys.stderr)
            return
        self.sampler = GPUSampler(self.path, self.interval_s)
        self.sampler.start()

    def stopped(self, outcome) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def finished(self, result: RunResult) -> None:
        measured = [r for r in result.records if r.phase == "measured"]
        if self.sampler is None or not measured:
            return
        window = (min(r.sent_s for r in measured), max(r.finished_s for r in measured))
        result.summary["energy"] = energy_summary(read_gpu_samples(self.path, result.outcome.origin_ns), window,
                                                  result.summary["tokens"]["output_total"])
