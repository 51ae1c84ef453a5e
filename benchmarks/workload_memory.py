"""How long a long open-loop run takes to send its first request, and how much memory the client holds, before and
after prompts were made just ahead of their send time (loadgen/load/arrivals.py).

    python benchmarks/workload_memory.py                    # writes results/cpu-workload-memory.json
    python benchmarks/workload_memory.py --before 6dfe34f   # the tree that made every prompt before the clock

For each tree (`--before REF`, exported with `git archive`, and this checkout) and each duration (20 s shows what
start-up alone costs: interpreter, imports, connections, workers), it starts
`python -m loadgen run --url SIM --duration D --qps 50` against a simulated engine in its own process (so the
client's memory is the client's), and measures:
  - first send: from the moment the loadgen process is started to its first request's send stamp (run.json's
    origin_perf_counter_ns + the first record's sent_s; both on CLOCK_MONOTONIC, the clock of this script too),
    so interpreter start-up and imports are in it;
  - peak RSS: the loadgen process's VmHWM (/proc/PID/status) after `--run-s` seconds of sending, then it is
    stopped with SIGINT (the old open loop made every prompt before the clock, so its peak is reached by then;
    the new one holds a few seconds of prompts from the start on). With --workers, each worker's VmHWM too.
The machine is shared: wall times depend on what else runs (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tabulate import tabulate  # noqa: E402

from backends.process import find_free_port  # noqa: E402

DURATIONS = ("20s", "20m", "2h")  # 20s: what start-up alone costs (1,000 requests)
QPS = 50


def _wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def _vm(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _export(ref: str, into: Path) -> Path:
    """The tree at `ref`, as files (git archive), with its commit sha."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _sha(ref: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", ref], check=True, capture_output=True,
                          text=True).stdout.strip()


def measure(tree: Path, url: str, duration: str, out: Path, run_s: float, workers: int, timeout_s: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", "loadgen", "run", "--url", url, "--duration", duration, "--qps", str(QPS),
            "--workers", str(workers), "--output", str(out), "--quiet"]
    started_ns = time.perf_counter_ns()
    # Its own session: if this script is stopped, the run is stopped with it (killpg in the finally below).
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        return _measure(proc, argv, started_ns, out, run_s, timeout_s, duration, workers)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _measure(proc: subprocess.Popen, argv: list[str], started_ns: int, out: Path, run_s: float, timeout_s: float,
             duration: str, workers: int) -> dict:
    records = out / "requests.jsonl"
    deadline = time.monotonic() + timeout_s
    peak_before_first = None
    while not (records.exists() and records.stat().st_size) and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"no request within {timeout_s:.0f} s ({' '.join(argv)})")
        peak_before_first = _vm(proc.pid, "VmHWM") or peak_before_first
        time.sleep(0.05)
    if proc.poll() is not None:
        raise SystemExit(f"loadgen exited {proc.returncode}: {proc.stderr.read().strip()[-500:]}")
    time.sleep(run_s)
    peak = _vm(proc.pid, "VmHWM")
    rss_now = _vm(proc.pid, "VmRSS")
    worker_peaks = [_vm(c, "VmHWM") or 0 for c in _children(proc.pid)
                    if "loadgen.load.worker" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    run = json.loads((out / "run.json").read_text())
    first = min(json.loads(line)["sent_s"] for line in records.read_text().splitlines() if line.strip())
    first_send_ns = run["origin_perf_counter_ns"] + first * 1e9
    sent = sum(1 for line in records.read_text().splitlines() if line.strip())
    return {"duration": duration, "qps": QPS, "workers": workers,
            "first_send_s": (first_send_ns - started_ns) / 1e9,
            "clock_origin_s": (run["origin_perf_counter_ns"] - started_ns) / 1e9,
            "peak_rss_mib": peak / 2**20 if peak else None,
            "rss_after_run_s_mib": rss_now / 2**20 if rss_now else None,
            "worker_peak_rss_mib": [w / 2**20 for w in worker_peaks],
            "records_after_stop": sent, "exit_code": proc.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="6dfe34f", help="git ref of the tree to compare against ('' to skip)")
    ap.add_argument("--durations", default=",".join(DURATIONS))
    ap.add_argument("--workers", default="1", help="comma-separated --workers values")
    ap.add_argument("--run-s", type=float, default=10.0, help="seconds of sending before the peak is read")
    ap.add_argument("--timeout-s", type=float, default=600.0, help="longest wait for the first request")
    ap.add_argument("--out", default=str(ROOT / "results" / "cpu-workload-memory.json"))
    args = ap.parse_args()
    rows, entries = [], []
    port = find_free_port()
    sim = subprocess.Popen([sys.executable, "-m", "backends.sim", "--port", str(port), "--fixed-ttft", "5ms",
                            "--fixed-itl", "1ms"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/health")
        with tempfile.TemporaryDirectory() as tmp:
            dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True).stdout.strip()
            trees = [("after", ROOT, _sha("HEAD") + ("+uncommitted" if dirty else ""))]
            if args.before:
                trees.insert(0, ("before", _export(args.before, Path(tmp) / "before"), _sha(args.before)))
            for label, tree, sha in trees:
                for duration in args.durations.split(","):
                    for workers in (int(w) for w in args.workers.split(",")):
                        out = Path(tmp) / f"{label}-{duration}-w{workers}"
                        entry = {"tree": label, "commit": sha,
                                 **measure(tree, url, duration, out, args.run_s, workers, args.timeout_s)}
                        entries.append(entry)
                        rows.append([label, sha[:7] + ("+" if sha.endswith("uncommitted") else ""), duration, workers, f"{entry['first_send_s']:.2f}",
                                     f"{entry['peak_rss_mib']:.0f}",
                                     " + ".join(f"{w:.0f}" for w in entry["worker_peak_rss_mib"]) or "-"])
                        print(*rows[-1], flush=True)
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    print(tabulate(rows, headers=["tree", "commit", "--duration", "--workers", "first send (s)",
                                  "peak RSS (MiB)", "workers' peak RSS (MiB)"]))
    result = {"benchmark": "workload_memory", "command": " ".join(sys.argv), "qps": QPS,
              "how": "loadgen run --url SIM --duration D --qps 50 in its own process; first send = process start "
                     "to the first record's send stamp; peak RSS = VmHWM of the loadgen process after --run-s s "
                     "of sending (--workers: the parent's, and each worker's apart)",
              "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                          "load_average": os.getloadavg(), "note": "shared 2-core development machine, busy"},
              "rows": entries}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
