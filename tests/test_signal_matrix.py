"""Every stop signal in every phase of `loadgen run`: (SIGINT, SIGINT twice, SIGTERM, SIGHUP, SIGKILL) x (preparing,
launching the sim, launching a framework, open loop, closed loop, --workers 2, summarising).

Each case asserts the exit code (130 for any stop signal; -9 for SIGKILL), run.json's status, the summary when
requests finished, the records against the server's own count, and that no process of the run is left: every
descendant of loadgen seen before the signal (the sim, a framework's supervisor, its server and that server's own
child, client workers) is gone afterwards, by /proc (psutil is not a dependency).

Phases are reached by waiting on something, never by sleeping: LOADGEN_TEST_HOLD (loadgen/interrupts.py) holds
`preparing`, `launching` (the sim's) and `summarising` until the test releases them; the framework stand-in answers
/health 503 until the test ends, so loadgen is waiting for its readiness; a running point is signalled once records
are on disk. A second signal is sent once loadgen has said it is stopping (a signal sent twice at once may be
merged by the kernel into one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT, SimServer, read_requests

TIMEOUT_S = 60
SIGNALS = {"sigint": [signal.SIGINT], "double-sigint": [signal.SIGINT, signal.SIGINT], "sigterm": [signal.SIGTERM],
           "sighup": [signal.SIGHUP], "sigkill": [signal.SIGKILL]}
PHASES = ["preparing", "launching-sim", "launching-framework", "open-loop", "closed-loop", "workers-2",
          "summarising"]

# A framework as loadgen sees one: started through the vllm adapter (--engine-cmd), it spawns a child of its own,
# never becomes ready, and on SIGTERM exits without stopping that child (the group kill must take it).
STANDIN = r'''
import argparse, os, signal, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
parser.add_argument("--host")
args, _ = parser.parse_known_args()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503)
        self.end_headers()

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer((args.host, args.port), Health)
path = os.environ["STANDIN_PIDS"]
with open(path + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid}\n")
os.replace(path + ".tmp", path)
server.serve_forever()
'''


@pytest.fixture(scope="module")
def sim():
    """One sim for the running phases (attached by --url): its /sim/requests is the server's own count."""
    server = SimServer("--fixed-ttft", "5ms", "--fixed-itl", "20ms")
    yield server
    server.stop()


def _server_count(url: str) -> int:
    with urllib.request.urlopen(url + "/sim/requests", timeout=30) as resp:
        return len(json.loads(resp.read())["requests"])


# -- processes, by /proc ------------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a live process; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of `root` (and root)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents.setdefault(st[0], []).append(int(entry))
            starts[int(entry)] = st[2]
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in starts:
            found[pid] = starts[pid]
            todo.extend(parents.get(pid, []))
    return found


def _alive(pids: dict[int, int]) -> list[int]:
    """Those still running: same start time (not a reused pid) and not a zombie (dead, waiting to be reaped)."""
    out = []
    for pid, start in pids.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[1] != "Z":
            out.append(pid)
    return out


def _wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"loadgen exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Case:
    phase: str
    out: Path
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    hold: Path | None = None


def _case(phase: str, tmp: Path, sim: SimServer) -> Case:
    out = tmp / "run"
    small = ["--input-len", "16", "--output-len", "16"]
    if phase in ("preparing", "launching-sim", "summarising"):
        hold = tmp / "release"
        wanted = {"preparing": "preparing", "launching-sim": "launching", "summarising": "summarising"}[phase]
        count = "4" if phase == "summarising" else "1000"
        return Case(phase, out, ["--num-requests", count, "--concurrency", "2", *small],
                    {"LOADGEN_TEST_HOLD": f"{wanted}:{hold}"}, hold)
    if phase == "launching-framework":
        script = tmp / "standin.py"
        script.write_text(STANDIN)
        return Case(phase, out, ["--backend", "vllm", "--model", "standin", "--engine-cmd",
                                 f"{sys.executable} {script}", "--num-requests", "1", *small],
                    {"STANDIN_PIDS": str(tmp / "standin.pids")})
    load = {"open-loop": ["--qps", "40"], "closed-loop": ["--concurrency", "6"],
            "workers-2": ["--concurrency", "6", "--workers", "2"]}[phase]
    return Case(phase, out, ["--url", sim.url, "--num-requests", "100000", *load, "--input-len", "16",
                             "--output-len", "32"])


def _reached(case: Case, proc: subprocess.Popen) -> None:
    """Wait until loadgen is in the case's phase."""
    if case.hold is not None:
        _wait_for(lambda: Path(str(case.hold) + ".reached").exists(), f"the {case.phase} hold", proc)
    elif case.phase == "launching-framework":
        pids = Path(case.env["STANDIN_PIDS"])
        _wait_for(pids.exists, "the stand-in's pids", proc)
    else:
        records = case.out / "requests.jsonl"
        _wait_for(lambda: records.exists() and len(records.read_text().splitlines()) >= 4, "4 records", proc)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("sig_name", list(SIGNALS))
def test_a_stop_signal_in_every_phase(tmp_path, sim, phase, sig_name):
    sigs = SIGNALS[sig_name]
    case = _case(phase, tmp_path, sim)
    before = _server_count(sim.url) if case.argv[:2] == ["--url", sim.url] else None
    stderr_path = tmp_path / "stderr"
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "loadgen", "run", "--output", str(case.out), "--quiet",
                                 *case.argv], cwd=ROOT, env={**os.environ, **case.env}, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
    ours: dict[int, int] = {}
    try:
        _reached(case, proc)
        ours = _descendants(proc.pid)
        expected = {"launching-sim": 2, "launching-framework": 4, "workers-2": 3}.get(phase, 1)
        assert len(ours) >= expected, f"expected {expected} processes under loadgen, saw {len(ours)}"
        proc.send_signal(sigs[0])
        if len(sigs) > 1:  # the second once the first was handled, or the kernel may merge the two
            _wait_for(lambda: "again to exit at once" in stderr_path.read_text(), "the first signal's line", proc)
            proc.send_signal(sigs[1])
        if case.hold is not None and sigs[0] != signal.SIGKILL:
            # released once the signal was seen: a deferred phase (summarising) then finishes
            deadline = time.monotonic() + TIMEOUT_S
            while ("again to exit at once" not in stderr_path.read_text() and proc.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.02)
            case.hold.touch()
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if case.hold is not None:
            case.hold.touch()
    stderr = stderr_path.read_text()
    killed = sigs[0] == signal.SIGKILL
    forced = len(sigs) > 1

    # exit code: 130 for every stop signal, whichever phase; SIGKILL cannot be handled
    assert proc.returncode == (-signal.SIGKILL if killed else 130), stderr
    assert "Traceback" not in stderr, stderr

    # no process left behind, SIGKILL included: the sim and the framework's group exit by themselves
    deadline = time.monotonic() + TIMEOUT_S
    while _alive(ours) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(ours), f"left running: {[(p, Path(f'/proc/{p}/cmdline').read_bytes()) for p in _alive(ours)]}"

    # run.json says what happened
    run_path = case.out / "run.json"
    if phase == "preparing":
        assert not case.out.exists()  # stopped before the run directory was made
        return
    run = json.loads(run_path.read_text()) if run_path.exists() else None
    if killed:
        # nothing can be written after SIGKILL: a run.json, if the run had started, still says running
        assert run is None or run["status"] == "running"
    else:
        assert run is not None and run["status"] == "interrupted", run
        if phase == "launching-sim":
            assert run["interrupted_in"] == "launching"
        elif phase == "launching-framework":
            assert run["interrupted_in"] == "waiting for readiness"
        elif phase == "summarising" and not forced:
            assert run["interrupted_in"] == "summarising"

    # records: unique, and (after a handled stop) exactly what the server received
    records = read_requests(case.out)
    assert len({r["index"] for r in records}) == len(records)
    if phase.startswith("launching"):
        assert not records
    if phase == "summarising":
        assert len(records) == 4 and {r["status"] for r in records} == {"ok"}
        if not killed and not forced:
            truth = (case.out / "sim_ground_truth.jsonl").read_text().splitlines()
            assert len(truth) == len(records)  # the launched sim's own list of the run's requests
    if before is not None:
        assert records
        counted = _server_count(sim.url) - before
        if killed:
            assert len(records) <= counted  # requests in flight at the SIGKILL have no record
        elif not forced:
            # Every request the server received has its record. A request cancelled before its bytes reached the
            # server may have one too (as `cancelled`, before any response): the only difference allowed.
            unseen = [r for r in records if r["status"] == "cancelled" and r["http_status"] is None]
            assert counted <= len(records) <= counted + len(unseen), (len(records), counted)
            statuses = {r["status"] for r in records}
            assert statuses <= {"ok", "cancelled"}, statuses
            print(f"\n{phase} {sig_name}: {len(records)} records, server counted {counted}")

    # the summary, whenever requests finished and the stop was not forced
    summary_path = case.out / "summary.json"
    if records and not killed and not forced:
        summary = json.loads(summary_path.read_text())
        assert summary["requests"]["total"] == len(records)
        assert summary["interrupted"] is (phase != "summarising")


# -- the race the parent-death signal alone cannot cover: a parent that died before the child armed it -------------
def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped): no child can have it as its parent."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_supervisor_launches_nothing_when_its_parent_is_already_gone(tmp_path):
    marker = tmp_path / "started"
    proc = subprocess.run([sys.executable, "-m", "backends.supervise", str(_dead_pid()), "--", sys.executable, "-c",
                           f"open({str(marker)!r}, 'w')"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not marker.exists(), proc.stderr


def test_sim_exits_at_start_when_its_parent_is_already_gone():
    """The sim's watcher used to take the parent from getppid() after its imports: a parent that died meanwhile
    was never noticed (the sim's parent was then init) and the sim served forever."""
    proc = subprocess.run([sys.executable, "-m", "backends.sim", "--port", "0", "--exit-with-parent", str(_dead_pid())],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "listening" not in proc.stdout, proc.stdout + proc.stderr


def test_supervisor_passes_the_engine_exit_status_and_stops_the_group_when_the_parent_dies(tmp_path):
    """A parent (a shell that exits) starts the supervisor; the engine and its child outlive the parent only
    until the supervisor notices: then the whole group is gone."""
    code = subprocess.run([sys.executable, "-m", "backends.supervise", str(os.getpid()), "--", sys.executable, "-c",
                           "import sys; sys.exit(7)"], cwd=ROOT, timeout=60).returncode
    assert code == 7
    pids = tmp_path / "pids"
    engine = (f"import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(3600)']); open({str(pids)!r}, 'w').write(f'{{c.pid}}'); time.sleep(3600)")
    # The parent: starts the supervisor in a new session (as ServerProcess does), prints its pid once the engine's
    # child runs, and exits when its stdin closes.
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\np = subprocess.Popen([sys.executable, '-m', 'backends.supervise', "
        f"str(os.getpid()), '--grace', '1', '--', sys.executable, '-c', {engine!r}], start_new_session=True)\n"
        f"while not os.path.exists({str(pids)!r}): time.sleep(0.02)\nprint(p.pid, flush=True)\nsys.stdin.read()")],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    supervisor = int(parent.stdout.readline())
    group = _descendants(supervisor)
    assert len(group) == 3  # supervisor, engine, engine's child
    parent.stdin.close()
    assert parent.wait(timeout=60) == 0
    deadline = time.monotonic() + TIMEOUT_S
    while _alive(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(group)


def test_parent_death_signal_degrades_to_polling_where_there_is_no_prctl(monkeypatch):
    from backends import supervise

    monkeypatch.setattr(supervise.sys, "platform", "darwin")
    assert supervise.set_parent_death_signal() is False
    assert supervise.die_with_parent(os.getppid()) is True  # the check that polling relies on still works
