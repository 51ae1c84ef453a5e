"""Pack a `loadgen sweep --output DIR` into one results file: the sweep's table and verdicts, what was launched
(command, version, readiness), each point's summary, and every measured request's send time, lengths and
latencies, so that each percentile, SLO fraction and rate can be recomputed without the run directories.

    python benchmarks/sweep_results.py /tmp/runs/lightllm --command "bash benchmarks/... lightllm" \
        --out results/h200-lightllm-serving-7b.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen.metrics import tpot_ms, ttft_ms  # noqa: E402
from loadgen.records import read_records  # noqa: E402

REQUEST_FIELDS = ["sent_s", "input_tokens", "output_tokens", "ttft_ms", "tpot_ms", "e2el_ms"]
BACKEND_KEYS = ("name", "simulated", "version", "launch_command", "launch_env", "ready_after_s", "weights")


def request_rows(path: Path) -> list[list]:
    rows = []
    for r in read_records(path):
        if r.phase != "measured" or not r.ok:
            continue
        first = ttft_ms(r)
        tpot = tpot_ms(r)
        rows.append([round(r.sent_s, 5), r.input_tokens, r.output_tokens,
                     None if first is None else round(first, 3), None if tpot is None else round(tpot, 4),
                     round((r.finished_s - r.sent_s) * 1e3, 3)])
    return rows


def pack(sweep_dir: Path, command: str | None) -> dict:
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    out: dict = {"command": command, "sweep": {k: v for k, v in sweep.items() if k != "points"}, "points": []}
    for point in sweep["points"]:
        run_dir = sweep_dir / Path(point["run_dir"]).name
        run = json.loads((run_dir / "run.json").read_text())
        if "backend" not in out:
            backend = run.get("backend") or {}
            out["backend"] = {k: backend[k] for k in BACKEND_KEYS if k in backend}
            out["environment"] = run.get("environment")
            out["gpu"] = run.get("gpu")
        summary = json.loads((run_dir / "summary.json").read_text())
        out["points"].append({"label": point["label"], "qps": point.get("qps"),
                              "concurrency": point.get("concurrency"), "verdict": point.get("verdict"),
                              "summary": summary, "requests_fields": REQUEST_FIELDS,
                              "requests": request_rows(run_dir / "requests.jsonl")})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir", type=Path, help="a `loadgen sweep --output` directory")
    p.add_argument("--command", help="the command that made it, recorded in the file")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    if not (args.sweep_dir / "sweep.json").is_file():
        print(f"sweep_results: {args.sweep_dir} holds no sweep.json; give a `loadgen sweep --output` directory",
              file=sys.stderr)
        return 2
    result = pack(args.sweep_dir, args.command)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.out}: {len(result['points'])} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
