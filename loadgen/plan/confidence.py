"""How far to trust a prediction: the nearest configuration the sim was validated on (results/sim-validation-index.json,
built by benchmarks/sim_validation_index.py from the committed measurements) and the sim's measured error there.

Labels: `validated` when this GPU, model and tensor-parallel degree were measured together; `unmeasured combination`
when each was measured but not together; `extrapolated` when the GPU, the model or the TP degree was never measured
(the label says which). Only entries made with the sim's current model count.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from loadgen.errors import LoadgenError
from loadgen.workload.distributions import LengthDistribution

INDEX = Path(__file__).resolve().parents[2] / "results" / "sim-validation-index.json"
ERROR_METRICS = ("ttft_p50_ms", "tpot_p50_ms", "output_tok_s")


@dataclass(frozen=True)
class Validated:
    """One measured configuration, its entries' points pooled."""

    gpu: str
    model: str
    tp: int
    mean_input: float
    mean_output: float
    max_num_seqs: int
    max_batched_tokens: int
    sources: tuple[str, ...]
    errors: tuple[dict, ...]  # signed relative errors per scored point
    max_rate: dict | None = None  # a max-rate-under-SLO check there, when one was made

    @property
    def description(self) -> str:
        return (f"{self.model} on 1x{self.gpu}" if self.tp == 1 else f"{self.model} on {self.tp}x{self.gpu} TP{self.tp}") + \
            f", {self.mean_input:.0f} in / {self.mean_output:.0f} out"

    def abs_error(self, how: str) -> dict[str, float]:
        out = {}
        for k in ERROR_METRICS:
            vals = sorted(abs(e[k]) for e in self.errors if k in e)
            if vals:
                out[k] = vals[len(vals) // 2] if how == "median" else vals[-1]
        return out


@dataclass(frozen=True)
class Confidence:
    label: str
    nearest: str
    median_abs_error: dict[str, float]
    max_abs_error: dict[str, float]
    never_measured: tuple[str, ...] = ()
    differences: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    max_rate_check: dict | None = None

    def short(self) -> str:
        if self.label == "extrapolated":
            return "extrapolated (" + ", ".join(self.never_measured) + " never measured)"
        return self.label

    def to_json(self) -> dict:
        return {"label": self.label, "nearest_validated": self.nearest, "sources": list(self.sources),
                "median_abs_error_there": self.median_abs_error, "max_abs_error_there": self.max_abs_error,
                "never_measured": list(self.never_measured), "differs_from_nearest_in": list(self.differences),
                "max_rate_check_there": self.max_rate_check}


def _mean_of(text: str) -> float:
    d = LengthDistribution.parse(str(text))
    return d.a if d.kind in ("fixed", "normal", "lognormal") else (d.a + d.b) / 2


@dataclass
class ValidationIndex:
    configs: list[Validated] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path = INDEX) -> ValidationIndex:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise LoadgenError(f"cannot read the validation index {path} ({exc}); rebuild it with "
                               "python benchmarks/sim_validation_index.py") from None
        pooled: dict[tuple, dict] = {}
        for e in data.get("entries", []):
            if not e.get("current") or e["engine"].get("cuda_graph_max_tokens", 512) != 512:
                continue
            key = (e["gpu"], e["model"], e["tp"], _mean_of(e["workload"]["input_len"]),
                   _mean_of(e["workload"]["output_len"]), e["engine"]["max_num_seqs"], e["engine"]["max_batched_tokens"])
            slot = pooled.setdefault(key, {"sources": [], "errors": [], "max_rate": None})
            slot["sources"].append(e["source"])
            slot["errors"] += [p["error"] for p in e["points"]]
            if e.get("max_rate_under_slo"):
                slot["max_rate"] = e["max_rate_under_slo"]
        for c in data.get("max_rate_checks", []):
            for key, slot in pooled.items():
                if key[:3] == (c.get("gpu"), c.get("model"), c.get("tp")) and slot["max_rate"] is None:
                    slot["max_rate"] = {k: c[k] for k in ("slo", "predicted_per_s", "measured", "source") if k in c}
        return cls([Validated(*k, tuple(dict.fromkeys(v["sources"])), tuple(v["errors"]), v["max_rate"])
                    for k, v in pooled.items()])

    def confidence(self, gpu: str, model: str, tp: int, mean_input: float, mean_output: float,
                   max_num_seqs: int, max_batched_tokens: int) -> Confidence:
        if not self.configs:
            return Confidence("extrapolated", "none: the index lists no validation", {}, {}, ("everything",))
        never = tuple(what for what, seen in ((f"GPU {gpu}", {c.gpu for c in self.configs}),
                                              (f"model {model}", {c.model for c in self.configs}),
                                              (f"TP {tp}", {c.tp for c in self.configs}))
                      if what.split(" ", 1)[1] not in {str(s) for s in seen})

        def distance(c: Validated) -> float:
            return (4 * (c.gpu != gpu) + 4 * (c.model != model) + 2 * (c.tp != tp)
                    + abs(math.log(mean_input / c.mean_input)) + abs(math.log(mean_output / c.mean_output))
                    + 0.5 * (c.max_num_seqs != max_num_seqs) + 0.5 * (c.max_batched_tokens != max_batched_tokens))

        near = min(self.configs, key=distance)
        diffs = tuple(d for d, differs in (
            ("GPU", near.gpu != gpu), ("model", near.model != model), ("TP", near.tp != tp),
            ("input length", abs(math.log(mean_input / near.mean_input)) > 0.1),
            ("output length", abs(math.log(mean_output / near.mean_output)) > 0.1),
            ("max_num_seqs", near.max_num_seqs != max_num_seqs),
            ("max batched tokens", near.max_batched_tokens != max_batched_tokens)) if differs)
        if never:
            label = "extrapolated"
        elif near.gpu == gpu and near.model == model and near.tp == tp:
            label = "validated"
        else:
            label = "unmeasured combination"
        return Confidence(label, near.description, near.abs_error("median"), near.abs_error("max"), never, diffs,
                          near.sources, near.max_rate)
