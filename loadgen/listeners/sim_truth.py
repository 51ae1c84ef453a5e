"""Against the simulated engine: the server's own timestamps for each of the run's requests (its private
/sim/requests route), written to sim_ground_truth.jsonl, and the client's timing error measured against them."""

from __future__ import annotations

import json

from loadgen.accuracy import timing_error
from loadgen.endpoint import get_json
from loadgen.run_events import RunResult


class SimGroundTruth:
    def __init__(self, url: str):
        self.url = url

    async def finished(self, result: RunResult) -> None:
        ids = {r.response_id for r in result.records if r.response_id}
        truth = [g for g in ((await get_json(self.url + "/sim/requests")) or {}).get("requests", []) if g["id"] in ids]
        with open(result.run_dir / "sim_ground_truth.jsonl", "w") as f:
            f.writelines(json.dumps(g) + "\n" for g in truth)
        result.summary["client_timing_error"] = timing_error(result.records, truth, result.outcome.origin_ns)
