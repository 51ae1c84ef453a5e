"""benchmarks/client_accuracy.py runs and writes its JSON. How small the client's error is depends on how busy the
machine is, so no threshold is asserted here (the README quotes the benchmark); what must hold on any machine is
causality: the client never sees a token before the server wrote it, and never sends before its schedule."""

import json
import subprocess
import sys

from conftest import ROOT


def test_client_accuracy_benchmark_writes_its_table_and_json(tmp_path):
    out = tmp_path / "accuracy.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "client_accuracy.py"), "--concurrency", "8",
                           "--num-requests", "16", "--workloads", "mixed", "--time-scale", "0.05",
                           "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TTFT err min (ms)" in proc.stdout and "lateness min (ms)" in proc.stdout and str(out) in proc.stdout
    report = json.loads(out.read_text())
    [point] = report["streams"]
    assert (point["workload"], point["concurrency"], point["requests"], point["failed"]) == ("mixed", 8, 16, 0)
    assert point["matched_requests"] == 16 and point["ttft_error_ms"]["count"] == 16
    # (client first chunk - server write) + (server receive - client send) >= 0; 0.5 ms for clock reading order
    assert point["ttft_error_ms"]["min"] > -0.5
    trace = report["trace"]
    assert trace["requests"] == 60 and trace["lateness_ms"]["min"] >= 0  # a request never leaves early
