"""HTML reports, comparison, CSV and telemetry maths, from checked-in fixture runs made with the sim."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_loadgen
from loadgen.errors import LoadgenError
from loadgen.outputs.compare import check_comparable, comparison_rows, load_run, relative
from loadgen.outputs.timeseries import achieved_rate, energy_joules, in_flight, offered_rate, output_token_rate
from loadgen.records import RequestRecord
from loadgen.telemetry.gpu import energy_summary

FIXTURES = ROOT / "tests" / "fixtures" / "runs"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")


def _copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


@pytest.mark.parametrize("name", ["sim-ok", "with-errors"])
def test_run_report_from_a_recorded_run(tmp_path, name):
    run_dir = _copy(name, tmp_path)
    proc = run_loadgen("report", str(run_dir), "--csv")
    assert proc.returncode == 0, proc.stderr
    html = (run_dir / "report.html").read_text()
    assert html.count("<img") >= 8 and "data:image/png;base64," in html
    assert "http://" not in html.replace(json.loads((run_dir / "run.json").read_text())["backend"]["url"], "")
    for section in ("Configuration and environment", "Summary", "TTFT distribution", "Requests in flight",
                    "Offered and achieved rate", "Output-token throughput", "launch command" if name == "sim-ok" else "url"):
        assert section in html or section in html.replace("&quot;", '"')
    simulated = json.loads((run_dir / "summary.json").read_text())["simulated"]
    assert ("SIMULATED" in html) == simulated
    if simulated:
        assert html.count('class="banner"') == 2  # top and bottom of the page
    if name == "with-errors":
        assert "error:http" in html and "error:stream" in html
    assert {p.name for p in (run_dir / "plots").iterdir()} >= {"ttft_cdf.png", "rates.png", "in_flight.png"}
    rows = list(csv.DictReader(open(run_dir / "requests.csv")))
    assert len(rows) == len((run_dir / "requests.jsonl").read_text().splitlines())
    assert {"ttft_ms", "tpot_ms", "e2el_ms", "status"} <= set(rows[0])
    summary_rows = dict(csv.reader(open(run_dir / "summary.csv")))
    assert "ttft_ms.p99" in summary_rows and "throughput.output_tokens_per_s" in summary_rows


def test_sweep_report_marks_saturation(tmp_path):
    sweep_dir = _copy("sweep", tmp_path)
    proc = run_loadgen("report", str(sweep_dir))
    assert proc.returncode == 0, proc.stderr
    html = (sweep_dir / "report.html").read_text()
    assert "Throughput vs load" in html and "TTFT vs throughput" in html and "Goodput vs load" in html
    assert html.count("<img") == 4 and "SIMULATED" in html
    assert "qps 5" in html and "qps 20" in html
    assert "saturation" not in html  # every point met the SLO: nothing to mark
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    sweep["points"][-1]["goodput"]["fraction"] = 0.5  # the 20 req/s point now misses it
    (sweep_dir / "sweep.json").write_text(json.dumps(sweep))
    assert run_loadgen("report", str(sweep_dir)).returncode == 0
    assert "highest load that met the SLO: 5" in (sweep_dir / "report.html").read_text()


BEHIND = {"requests": 600, "arrival_window_s": 30.0, "first_latency_s": 0.1, "fit_from_s": 0.1, "fit_to_s": 30.0,
          "offered_per_s": 20.0, "achieved_per_s": 10.0, "in_flight_start": 2.0, "in_flight_end": 300.0,
          "in_flight_mean": 150.0}


def test_sweep_report_crosses_out_a_point_where_the_server_fell_behind(tmp_path, monkeypatch):
    from loadgen.outputs import html_report, plots

    sweep_dir = _copy("sweep", tmp_path)
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert "pace" not in sweep["points"][0]  # an older sweep: pace comes from each point's requests.jsonl
    html = html_report.sweep_report(sweep_dir, sweep)
    assert "saturation" not in html and html.count(">yes (") == 2  # both kept up
    sweep["points"][-1]["pace"] = BEHIND  # the 20 req/s point still meets the SLO fraction, but fell behind
    calls = []
    real = plots.sweep_curves
    monkeypatch.setattr(plots, "sweep_curves", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    html = html_report.sweep_report(sweep_dir, sweep)
    assert sweep["points"][-1]["goodput"]["fraction"] >= 0.9
    assert "highest load that met the SLO: 5" in html
    assert "qps 20 fails: the server fell behind: completed 10 req/s while 20 req/s arrived" in html
    goodput = next((a, k) for a, k in calls if a[4] == "Goodput vs load")
    assert goodput[1]["failing"] == [False, True] and goodput[0][6] == 5  # crossed out; saturation marked at 5


def test_compare_gives_the_keeping_up_verdict(tmp_path):
    a = load_run(FIXTURES / "sim-ok")
    b_dir = _copy("sim-ok", tmp_path)
    summary = json.loads((b_dir / "summary.json").read_text())
    (b_dir / "summary.json").write_text(json.dumps({**summary, "pace": BEHIND}))
    rows = {r["metric"]: r for r in comparison_rows([a, load_run(b_dir)])}
    assert rows["kept up (within 5%)"]["values"] == ["yes", "no (fell behind)"]
    assert rows["meets SLO (90% and kept up)"]["values"] == ["yes", "no"]
    assert rows["completed req/s (while arriving)"]["values"][1] == 10.0
    proc = run_loadgen("compare", str(FIXTURES / "sim-ok"), str(b_dir))
    assert proc.returncode == 0 and "no (fell behind)" in proc.stdout


def test_report_refuses_a_directory_without_results(tmp_path):
    proc = run_loadgen("report", str(tmp_path))
    assert proc.returncode == 2 and "neither a run" in proc.stderr


def test_compare_relative_differences(tmp_path):
    a, b = load_run(FIXTURES / "sim-ok"), load_run(FIXTURES / "sim-a100")
    rows = {r["metric"]: r for r in comparison_rows([a, b])}
    ttft_a, ttft_b = a.summary["ttft_ms"]["p50"], b.summary["ttft_ms"]["p50"]
    assert rows["TTFT p50 (ms)"]["values"] == [ttft_a, ttft_b]
    assert rows["TTFT p50 (ms)"]["relative"][1] == pytest.approx((ttft_b - ttft_a) / ttft_a)
    assert rows["TTFT p50 (ms)"]["relative"][0] == 0.0
    assert relative(12.0, 10.0) == pytest.approx(0.2) and relative(1.0, 0.0) is None
    out = tmp_path / "cmp.html"
    proc = run_loadgen("compare", str(FIXTURES / "sim-ok"), str(FIXTURES / "sim-a100"), "--html", str(out))
    assert proc.returncode == 0, proc.stderr
    expected = f"{ttft_b:,.2f} ({(ttft_b - ttft_a) / ttft_a:+.1%})"
    assert expected in proc.stdout
    assert out.read_text().count("<img") == 4


def test_compare_refuses_different_workloads_unless_forced():
    runs = [load_run(FIXTURES / "sim-ok"), load_run(FIXTURES / "with-errors")]
    with pytest.raises(LoadgenError, match="workloads differ.*--force"):
        check_comparable(runs, force=False)
    assert check_comparable(runs, force=True)
    proc = run_loadgen("compare", str(FIXTURES / "sim-ok"), str(FIXTURES / "with-errors"))
    assert proc.returncode == 2 and "pass --force" in proc.stderr
    forced = run_loadgen("compare", str(FIXTURES / "sim-ok"), str(FIXTURES / "with-errors"), "--force")
    assert forced.returncode == 0 and "forced comparison" in forced.stdout


def _rec(i, sent, finished, times=(), ok=True, scheduled=None):
    return RequestRecord(index=i, phase="measured", status="ok" if ok else "error:http", sent_s=sent,
                         finished_s=finished, scheduled_s=scheduled, token_times_ms=list(times))


def test_timeseries_by_hand():
    recs = [_rec(0, 0.1, 1.5, [200, 700], scheduled=0.0), _rec(1, 0.6, 1.2, [300], scheduled=0.5),
            _rec(2, 1.1, 1.9, [], ok=False, scheduled=1.1)]
    edges = np.array([0.0, 1.0, 2.0])
    assert offered_rate(recs, edges).tolist() == [2.0, 1.0]
    assert achieved_rate(recs, edges).tolist() == [0.0, 2.0]
    assert in_flight(recs, np.array([0.05, 0.7, 1.3, 1.6, 2.0])).tolist() == [0, 2, 2, 1, 0]
    # token arrivals: 0.3, 0.8 (request 0), 0.9 (request 1)
    assert output_token_rate(recs, edges).tolist() == [3.0, 0.0]


def test_energy_by_hand():
    assert energy_joules([(0, 100), (1, 200), (3, 200)]) == 550.0
    samples = [{"t_s": t, "gpu": g, "power_w": p} for g, pts in
               ((0, [(0, 100), (1, 200), (2, 200), (9, 999)]), (1, [(0, 50), (2, 50)])) for t, p in pts]
    e = energy_summary(samples, window=(0, 2), output_tokens=100)
    # GPU 0: 150 + 200 = 350 J; GPU 1: 100 J; the sample at 9 s is outside the window
    assert e["energy_j"] == 450 and e["gpus"] == 2
    assert e["avg_power_w"] == 225 and e["joules_per_output_token"] == 4.5
    assert energy_summary([], (0, 1), 10) is None


def test_committed_h100_sample_reads_back():
    from loadgen.telemetry.gpu import read_gpu_samples

    samples = read_gpu_samples(ROOT / "results" / "h100-nvml-sample.jsonl")
    assert len(samples) == 100 and samples[0]["t_s"] == 0 and "H100" in samples[0]["name"]
    busy = [s for s in samples if s["util_pct"] > 90]
    assert busy and max(s["power_w"] for s in busy) > 600


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (scripts/install-test-deps)")
@pytest.mark.parametrize("name", ["sim-ok", "sweep"])
def test_report_renders_in_headless_chromium(tmp_path, name):
    from playwright.sync_api import sync_playwright

    run_dir = _copy(name, tmp_path)
    assert run_loadgen("report", str(run_dir)).returncode == 0
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"report-{name}.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto((run_dir / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.locator("img")
        widths = [images.nth(i).evaluate("img => img.naturalWidth") for i in range(images.count())]
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert len(widths) >= 4 and all(w > 300 for w in widths)  # every plot decoded
    assert shot.stat().st_size > 50_000
