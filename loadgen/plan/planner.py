"""A plan: every candidate deployment checked for feasibility, each distinct engine's max rate under the SLO found by
replay (in worker processes), replicas scored analytically (loadgen.plan.rank), each result labelled with its
confidence. Everything predicted here is SIMULATED."""

from __future__ import annotations

import concurrent.futures
import os
import time
from dataclasses import dataclass, field

from backends.sim.config import SimConfig
from loadgen.plan.confidence import Confidence, ValidationIndex
from loadgen.plan.rank import Scores, replicas_for, score, sort_key
from loadgen.plan.search import (
    EngineResult,
    PointPrediction,
    PointSize,
    Slo,
    max_rate,
    predict_point,
)
from loadgen.plan.space import (
    Candidate,
    EngineConfig,
    MemoryFacts,
    SearchSpace,
    infeasible_reason,
    memory_facts,
)
from loadgen.plan.workload import PlanWorkload
from scenarios.catalog import GPUSpec, ModelSpec


@dataclass(frozen=True)
class PlanRequest:
    model: ModelSpec
    space: SearchSpace
    workload: PlanWorkload
    slo: Slo
    size: PointSize = field(default_factory=PointSize)
    seed: int = 0
    target_rate: float | None = None
    prices: dict[str, float] = field(default_factory=dict)  # catalog key -> $ per GPU-hour
    price_source: str = ""
    max_model_len: int | None = None  # None: the model's context
    rank_by: str = "cost"

    @property
    def engine_max_model_len(self) -> int:
        return self.max_model_len or self.model.max_context


@dataclass
class PlannedConfig:
    candidate: Candidate
    feasible: bool
    reason: str = ""
    engine_max_rate_per_s: float | None = None
    scores: Scores | None = None
    operating_point: PointPrediction | None = None
    headroom: dict[str, float] = field(default_factory=dict)  # metric -> 1 - predicted percentile / limit
    memory: MemoryFacts | None = None
    confidence: Confidence | None = None
    little_concurrency: float | None = None  # sequences in flight per replica at the operating rate (Little's law)


@dataclass
class PlanResult:
    request: PlanRequest
    configs: list[PlannedConfig]
    engines_simulated: int
    replays: int
    requests_simulated: int
    wall_s: float
    cpu_s: float

    @property
    def feasible(self) -> list[PlannedConfig]:
        key = sort_key(self.request.rank_by)
        return sorted((c for c in self.configs if c.feasible), key=lambda c: key(c.scores))

    @property
    def infeasible(self) -> list[PlannedConfig]:
        return [c for c in self.configs if not c.feasible]


def _sim_config(model: ModelSpec, gpu: GPUSpec, engine: EngineConfig) -> SimConfig:
    return SimConfig(model=model, gpu=gpu, tp=engine.tp, max_num_seqs=engine.max_num_seqs,
                     max_batched_tokens=engine.max_batched_tokens)


def evaluate_engines(model: ModelSpec, gpu: GPUSpec, engines: list[EngineConfig], workload: PlanWorkload, slo: Slo,
                     size: PointSize, seed: int, target_rate: float | None, replica_counts: list[int]
                     ) -> list[tuple[EngineConfig, EngineResult, dict[int, PointPrediction]]]:
    """Engines of one GPU and TP degree, one after another (runs in a worker process): each search starts from the
    previous engine's max rate, since engine settings that the load never reaches leave it unchanged."""
    out, guess = [], None
    for engine in engines:
        out.append(evaluate_engine(model, gpu, engine, workload, slo, size, seed, target_rate, replica_counts, guess))
        guess = out[-1][1].max_rate_per_s or guess
    return out


def evaluate_engine(model: ModelSpec, gpu: GPUSpec, engine: EngineConfig, workload: PlanWorkload, slo: Slo,
                    size: PointSize, seed: int, target_rate: float | None, replica_counts: list[int],
                    guess: float | None = None) -> tuple[EngineConfig, EngineResult, dict[int, PointPrediction]]:
    """One engine's max rate and, with a target, its predicted point at target / R for every replica count R that
    reaches the target (the latency headroom each deployment keeps)."""
    config = _sim_config(model, gpu, engine)
    result = max_rate(config, workload, slo, size, seed, guess=guess)
    at_target: dict[int, PointPrediction] = {}
    if target_rate is not None and result.max_rate_per_s:
        for r in replica_counts:
            if r >= replicas_for(target_rate, result.max_rate_per_s):
                at_target[r] = predict_point(config, workload, target_rate / r, size, seed, slo)
                result.replays += 1
                result.requests_simulated += at_target[r].requests
    return engine, result, at_target


def run_plan(req: PlanRequest, jobs: int | None = None, progress: bool = True,
             index: ValidationIndex | None = None) -> PlanResult:
    t0, c0 = time.perf_counter(), _cpu()
    index = index if index is not None else ValidationIndex.load()
    gpus = {g.key: g for g in req.space.gpus}
    w = req.workload
    configs: list[PlannedConfig] = []
    runnable: list[EngineConfig] = []
    reasons: dict[EngineConfig, str] = {}
    for engine in req.space.engines():
        why = infeasible_reason(req.model, gpus[engine.gpu], engine, w.longest, req.engine_max_model_len)
        if why:
            reasons[engine] = why
        else:
            runnable.append(engine)
    results: dict[EngineConfig, tuple[EngineResult, dict[int, PointPrediction]]] = {}
    groups: dict[tuple[str, int], list[EngineConfig]] = {}
    for e in runnable:
        groups.setdefault((e.gpu, e.tp), []).append(e)
    tasks = [(req.model, gpus[g], sorted(es, key=lambda e: (e.max_num_seqs, e.max_batched_tokens)), w, req.slo,
              req.size, req.seed, req.target_rate, req.space.replica_counts(tp)) for (g, tp), es in groups.items()]
    bar = _bar(len(runnable), progress)
    jobs = max(1, jobs or os.cpu_count() or 1)
    if jobs == 1 or len(tasks) <= 1:
        done = (evaluate_engines(*t) for t in tasks)
        for group in done:
            for engine, res, pts in group:
                results[engine] = (res, pts)
            bar.update(len(group))
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
            futures = [pool.submit(evaluate_engines, *t) for t in tasks]
            for f in concurrent.futures.as_completed(futures):
                group = f.result()
                for engine, res, pts in group:
                    results[engine] = (res, pts)
                bar.update(len(group))
    bar.close()
    for engine in req.space.engines():
        gpu = gpus[engine.gpu]
        for replicas in req.space.replica_counts(engine.tp):
            cand = Candidate(engine, replicas)
            if engine in reasons:
                configs.append(PlannedConfig(cand, False, reasons[engine]))
                continue
            res, at_target = results[engine]
            if res.max_rate_per_s is None:
                configs.append(PlannedConfig(cand, False, res.reason))
                continue
            if req.target_rate is not None and replicas not in at_target:
                need = replicas_for(req.target_rate, res.max_rate_per_s)
                configs.append(PlannedConfig(cand, False, f"{res.max_rate_per_s:.3g} req/s per replica (predicted): "
                                             f"the target {req.target_rate:g} req/s needs {need} replicas "
                                             f"({need * engine.tp} GPUs); fewer fall short", res.max_rate_per_s))
                continue
            point = at_target.get(replicas, res.at_max)
            configs.append(_planned(req, index, gpu, cand, res, point))
    return PlanResult(req, configs, len(results), sum(r.replays for r, _ in results.values()),
                      sum(r.requests_simulated for r, _ in results.values()), time.perf_counter() - t0, _cpu() - c0)


def _planned(req: PlanRequest, index: ValidationIndex, gpu: GPUSpec, cand: Candidate, res: EngineResult,
             point: PointPrediction) -> PlannedConfig:
    e, w = cand.engine, req.workload
    scores = score(res.max_rate_per_s, cand.replicas, e.tp, point.slo_fraction, w.mean_output,
                   req.prices.get(e.gpu), req.target_rate)
    headroom = {k: 1 - point.percentiles_ms[k] / limit for k, limit in req.slo.limits_ms.items()}
    return PlannedConfig(
        cand, True, "", res.max_rate_per_s, scores, point, headroom,
        memory_facts(req.model, gpu, e.tp, e.max_num_seqs, w.mean_input + w.mean_output),
        index.confidence(gpu.key, req.model.name, e.tp, w.mean_input, w.mean_output, e.max_num_seqs,
                         e.max_batched_tokens),
        point.rate_per_s * point.mean_e2el_s)


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the worker pool)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    # disable=None: on only when stderr is a terminal, so logs and pipes get no carriage-return lines
    return tqdm(total=total, desc="simulating engines", unit="engine", disable=None if enabled else True, leave=False)
