"""Scrape a server's Prometheus /metrics during a run and summarise the framework's own view.

Samples go to server_metrics.jsonl as {"t_ns": monotonic stamp, "values": {series: value}}; the summary gives
running and waiting requests and KV-cache use (mean, max) and the server's TTFT histogram over the run
(mean from _sum/_count deltas; percentiles interpolated within bucket deltas), beside the client's figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp

# framework-neutral name -> the series each framework exports
GAUGES = {
    "running": ("vllm:num_requests_running", "sglang:num_running_reqs", "tgi_batch_current_size",
                "lightllm_batch_current_size"),
    "waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "tgi_queue_size", "lightllm_queue_size"),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"),
}
TTFT_HISTOGRAMS = ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds",
                   "lightllm_request_first_token_duration")
# prompt tokens looked up in / found in the prefix cache (counters; LightLLM's are the sums of its per-request
# prompt-length and cached-length histograms): a benchmark whose prompts repeat measures the cache, not prefill,
# and the summary must say so
PREFIX_CACHE_COUNTERS = (("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"),
                         ("lightllm_request_input_length_sum", "lightllm_cache_length_sum"))
# Past this share of prompt tokens served from the cache, the summary warns that TTFT measured cached prefill.
PREFIX_CACHE_WARN = 0.2


def prefix_cache_warning(server: dict | None) -> str | None:
    cache = (server or {}).get("prefix_cache")
    if not cache or cache["hit_rate"] <= PREFIX_CACHE_WARN:
        return None
    return (f"the server found {cache['hit_rate']:.0%} of prompt tokens in its prefix cache: these TTFTs measure "
            "cached prefill (meant, with shared prefixes or conversations; otherwise the prompts repeat an earlier "
            "run's: change --seed, or turn the server's prefix cache off)")


def parse_metrics(text: str) -> dict[str, float]:
    """Series name with sorted labels -> value, via prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return values


def _series(values: dict[str, float], name: str) -> list[float]:
    return [v for k, v in values.items() if k == name or k.startswith(name + "{")]


def _delta(first: dict[str, float], last: dict[str, float], name: str) -> float:
    """How much a counter (all its label sets together) grew between two scrapes."""
    return sum(_series(last, name)) - sum(_series(first, name))


def _bucket(values: dict[str, float], name: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for key, v in values.items():
        if key.startswith(name + "_bucket{"):
            le = [p.split("=", 1)[1] for p in key[len(name) + 8:-1].split(",") if p.startswith("le=")]
            if le:
                bound = float("inf") if le[0] in ("+Inf", "inf") else float(le[0])
                out[bound] = out.get(bound, 0.0) + v
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus-style: linear interpolation inside the bucket holding the q-th observation (cumulative counts)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        if buckets[b] >= rank:
            if b == float("inf"):
                return prev_bound
            span = buckets[b] - prev_count
            return prev_bound + (b - prev_bound) * ((rank - prev_count) / span if span else 0.0)
        prev_bound, prev_count = b, buckets[b]
    return prev_bound


# vLLM's per-request phase histograms (seconds): where a request's time went, as the server saw it.
REQUEST_PHASE_HISTOGRAMS = {
    "e2e": "vllm:e2e_request_latency_seconds",
    "queue": "vllm:request_queue_time_seconds",
    "inference": "vllm:request_inference_time_seconds",
    "prefill": "vllm:request_prefill_time_seconds",
    "decode": "vllm:request_decode_time_seconds",
    "ttft": "vllm:time_to_first_token_seconds",
}


def summarize_server_metrics(rows: list[dict]) -> dict | None:
    if not rows:
        return None
    out: dict = {"scrapes": len(rows)}
    for label, names in GAUGES.items():
        for name in names:
            series = [sum(vals) for r in rows if (vals := _series(r["values"], name))]
            if series:
                out[label] = {"metric": name, "mean": sum(series) / len(series), "max": max(series)}
                break
    first, last = rows[0]["values"], rows[-1]["values"]
    for queries, hits in PREFIX_CACHE_COUNTERS:
        asked = _delta(first, last, queries)
        if asked > 0:
            found = _delta(first, last, hits)
            out["prefix_cache"] = {"queried_tokens": asked, "hit_tokens": found, "hit_rate": found / asked,
                                   "metric": hits}
            break
    for name in TTFT_HISTOGRAMS:
        count = _delta(first, last, name + "_count")
        if count > 0:
            total = _delta(first, last, name + "_sum")
            b1, b0 = _bucket(last, name), _bucket(first, name)
            delta = {b: b1[b] - b0.get(b, 0.0) for b in b1}
            out["server_ttft_ms"] = {
                "metric": name, "requests": count, "mean": total / count * 1e3,
                **{k: (v * 1e3 if (v := histogram_quantile(q, delta)) is not None else None)
                   for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
                "method": "deltas of the server's histogram over the run; percentiles interpolated within buckets",
            }
            break
    phases = {}
    for label, name in REQUEST_PHASE_HISTOGRAMS.items():
        count = _delta(first, last, name + "_count")
        if count > 0:
            phases[label] = _delta(first, last, name + "_sum") / count * 1e3
    if phases:
        if "e2e" in phases and "inference" in phases:
            # arrival at the API server to the engine's first scheduling: tokenisation, input processing, the hop
            # to the engine process and the engine's queue (vLLM times inference from the first scheduling)
            phases["before_inference"] = phases["e2e"] - phases["inference"]
        out["request_phases_mean_ms"] = phases
    return out


async def scrape(url: str, path: Path, interval_s: float, stop: asyncio.Event, headers: dict[str, str],
                 on_first=None) -> int:
    """Append one line per scrape until `stop` is set, then a final one; failed scrapes are skipped (and counted)."""
    failures = 0
    final = False
    first = True
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=max(1.0, interval_s))) as session:
        with open(path, "a", encoding="utf-8") as f:
            while True:
                t_ns = time.perf_counter_ns()
                try:
                    async with session.get(url, headers=headers) as resp:
                        text = await resp.text() if resp.status == 200 else None
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    text = None
                if text is None:
                    failures += 1
                else:
                    try:
                        f.write(json.dumps({"t_ns": t_ns, "values": parse_metrics(text)}) + "\n")
                        f.flush()
                    except ValueError:
                        failures += 1
                if first and on_first is not None:
                    on_first()
                first = False
                if final:
                    return failures
                try:
                    await asyncio.wait_for(stop.wait(), interval_s)
                    final = True  # one last scrape, so counters and histograms cover the run's last requests
                except asyncio.TimeoutError:
                    continue


def read_server_metrics(path: Path, origin_ns: int | None = None) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if rows:
        origin = origin_ns if origin_ns is not None else rows[0]["t_ns"]
        for r in rows:
            r["t_s"] = (r["t_ns"] - origin) / 1e9
    return rows


HEADERS_ENV = "LOADGEN_SCRAPE_HEADERS"  # the API key travels in the environment, never on a command line
PARENT_ENV = "LOADGEN_SCRAPE_PARENT"  # loadgen's pid: it may be dead by the time the child's imports are done


def scraper_argv(url: str, path: Path, interval_s: float) -> list[str]:
    """The scraper child: prints "ready" after its baseline scrape, takes a final scrape on SIGTERM or SIGINT."""
    return [sys.executable, "-m", "loadgen.telemetry.server_metrics", url, str(path), str(interval_s)]


class MetricsScraper:
    """Scrapes in a child process: parsing a framework's /metrics page (vLLM's is ~100 KB of histograms) costs tens
    of milliseconds of CPU, which inside the load loop would delay sends and inflate every TTFT measured meanwhile."""

    def __init__(self, url: str, path: Path, interval_s: float, headers: dict[str, str]):
        self.url, self.path, self.interval_s, self.headers = url, path, interval_s, headers
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 15.0) -> None:
        """Returns after the first scrape (the baseline for counters and histograms) was attempted."""
        env = {**os.environ, HEADERS_ENV: json.dumps(self.headers), PARENT_ENV: str(os.getpid())}
        # A session of its own: a terminal's hang-up or Ctrl-C never reaches it; loadgen stops it (SIGTERM).
        self.proc = await asyncio.create_subprocess_exec(
            *scraper_argv(self.url, self.path, self.interval_s), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, env=env, start_new_session=True)
        try:
            await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except asyncio.TimeoutError:
            pass  # the server may be slow to answer; the run does not wait longer for its metrics

    async def stop(self, timeout_s: float = 10.0) -> None:
        """The child takes a final scrape on SIGTERM, so the counters cover the run's last requests."""
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except ProcessLookupError:
            pass
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self.proc.kill()
            await self.proc.wait()


def _child(url: str, path: str, interval_s: float) -> int:
    headers = json.loads(os.environ.pop(HEADERS_ENV, "{}"))

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # stop cleanly, with a final scrape
            loop.add_signal_handler(sig, stop.set)
        parent = int(os.environ.pop(PARENT_ENV, "0")) or os.getppid()

        async def orphaned() -> None:  # the parent was killed: do not scrape forever
            while not stop.is_set():
                if os.getppid() != parent:
                    stop.set()
                await asyncio.sleep(0.5)

        watch = asyncio.create_task(orphaned())

        def ready() -> None:
            print("ready", flush=True)

        try:
            return await scrape(url, Path(path), interval_s, stop, headers, on_first=ready)
        finally:
            watch.cancel()

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2], float(sys.argv[3])))
