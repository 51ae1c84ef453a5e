"""User mistakes: each gives exactly one line on stderr that names the problem and the fix, and exit code 2."""

import socket

import pytest

from conftest import run_loadgen

BAD_YAML = "name: [broken\n"
UNKNOWN_FIELD = "name: x\nversion: 1\ndescription: d\nworkload:\n  input_length: 5\n"
WRONG_TYPE = "name: x\nversion: 1\ndescription: d\narrival:\n  qps: fast\n"


def _file(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


CASES = [
    # (id, args (callable of tmp_path -> list), text the one line must contain)
    ("bad-distribution", lambda t: ["--input-len", "gauss:1,2"], "unknown distribution"),
    ("distribution-arity", lambda t: ["--output-len", "uniform:5"], "uniform takes 2"),
    ("unknown-model", lambda t: ["--model", "gpt-9"], "unknown model 'gpt-9'; choose one of"),
    ("unknown-gpu", lambda t: ["--gpu", "tpu-v5"], "unknown GPU 'tpu-v5'; choose one of"),
    ("unknown-backend", lambda t: ["--backend", "magic"], "invalid choice: 'magic'"),
    ("negative-qps", lambda t: ["--qps", "-3"], "must be > 0"),
    ("zero-qps", lambda t: ["--qps", "0"], "must be > 0"),
    ("zero-concurrency", lambda t: ["--concurrency", "0"], "must be > 0"),
    ("unreachable-url", lambda t: ["--url", "http://127.0.0.1:9"], "check --url and that the server is up"),
    ("url-without-scheme", lambda t: ["--url", "localhost:8000"], "needs a scheme: write http://localhost:8000"),
    ("bad-slo-metric", lambda t: ["--slo", "latency:5s"], "METRIC one of ttft"),
    ("bad-slo-limit", lambda t: ["--slo", "ttft:soon"], "e.g. 500ms"),
    ("slo-without-unit", lambda t: ["--slo", "ttft:500"], "has no unit: write 500ms or 500s"),
    ("qps-and-concurrency", lambda t: ["--qps", "2", "--concurrency", "4"], "exclude each other"),
    ("sim-with-url", lambda t: ["--backend", "sim", "--url", "http://127.0.0.1:9"], "drop --url"),
    ("model-does-not-fit", lambda t: ["--model", "70b", "--gpus", "1"], "use more GPUs (--gpus)"),
    ("bad-duration", lambda t: ["--timeout=-1s"], "bad duration"),
    ("zero-timeout", lambda t: ["--timeout", "0s"], "positive duration"),
    ("burstiness-without-gamma", lambda t: ["--burstiness", "0.5"], "add --arrival gamma"),
    ("missing-tokenizer", lambda t: ["--tokenizer", "/nonexistent/tok"], "no such file"),
    ("not-a-number", lambda t: ["--num-requests", "many"], "not a valid integer"),
    ("error-rate-above-1", lambda t: ["--max-error-rate", "2"], "between 0 and 1"),
    ("malformed-scenario-yaml", lambda t: ["--scenario", _file(t, "a.yaml", BAD_YAML)], "not valid YAML at line"),
    ("unknown-scenario-field", lambda t: ["--scenario", _file(t, "b.yaml", UNKNOWN_FIELD)],
     "unknown field 'workload.input_length'"),
    ("wrong-scenario-type", lambda t: ["--scenario", _file(t, "c.yaml", WRONG_TYPE)],
     "field 'arrival.qps' must be"),
    ("unknown-scenario", lambda t: ["--scenario", "no-such-scenario"], "`loadgen scenarios` lists them"),
    ("missing-dataset", lambda t: ["--dataset", str(t / "nope.jsonl")], "does not exist"),
    ("dataset-is-a-directory", lambda t: ["--dataset", str(t)], "is not a file"),
    ("empty-dataset", lambda t: ["--dataset", _file(t, "e.jsonl", "")], "is empty"),
    ("unusable-dataset", lambda t: ["--dataset", _file(t, "f.jsonl", '{"prompt": ""}\n')], "no usable"),
    ("trace-without-dataset", lambda t: ["--arrival", "trace"], "needs --dataset"),
    ("trace-with-text-dataset", lambda t: ["--arrival", "trace", "--dataset", "prompts-sample.jsonl"],
     "needs a CSV trace"),
    ("multi-turn-without-dataset", lambda t: ["--multi-turn"], "add --dataset"),
    ("prefix-without-length", lambda t: ["--prefix-groups", "4"], "give both"),
    ("output-not-writable", lambda t: ["--output", _file(t, "plain-file", "x") + "/sub"], "choose another --output"),
]


@pytest.mark.parametrize("args,needle", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line_and_exit_2(tmp_path, args, needle):
    argv = args(tmp_path)
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "run")]
    proc = run_loadgen("run", "--num-requests", "2", *argv, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("command", [["run", "--num-requests", "1"], ["sweep", "--qps", "1", "--num-requests", "1"],
                                     ["locust", "--headless", "--users", "1", "--run-time", "1s"]])
@pytest.mark.parametrize("held", ["requests.jsonl", "run.json", "sweep.json"])
def test_existing_run_directory_is_refused(tmp_path, command, held):
    """A second run into the same --output would append its records to the first's (seen with `loadgen locust`)."""
    (tmp_path / held).write_text("")
    proc = run_loadgen(*command, "--output", str(tmp_path))
    assert proc.returncode == 2 and f"already holds a run ({held})" in proc.stderr, proc.stderr
    assert (tmp_path / held).read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == [held]


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run_loadgen("serve-sim", "--port", str(port), timeout=30)
    assert proc.returncode == 2 and "choose another --port" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,needle", [
    (["sweep"], "give points to sweep"),
    (["sweep", "--qps", "1,x"], "not a valid number"),
    (["sweep", "--qps", "1,2", "--concurrency", "4,4"], "concurrency-4 is given more than once"),
    (["sweep", "--until-slo", "ttft:1s", "--qps", "1,2"], "drop --qps"),
    (["scenarios", "show"], "needs a NAME"),
])
def test_other_commands(tmp_path, argv, needle):
    extra = ["--output", str(tmp_path / "o")] if argv[0] == "sweep" else []
    proc = run_loadgen(*argv, *extra, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr


@pytest.mark.parametrize("points", [["--qps", "4,4,4"], ["--qps", "0.1,0.1000001"], ["--concurrency", "8,2,8"]])
def test_repeated_sweep_points_are_refused(tmp_path, points):
    """Two points of one name share a directory, so the later one's summary would count the earlier's records."""
    out = tmp_path / "sweep"
    proc = run_loadgen("sweep", *points, "--num-requests", "1", "--output", str(out))
    assert proc.returncode == 2 and "sweep points must differ" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("argv", [["run", "--api-k", "sk-secret", "--num-requests", "1"],
                                  ["run", "--api=sk-secret", "--num-requests", "1"],
                                  ["run", "--num-req", "1"]])
def test_abbreviated_flags_are_refused(tmp_path, argv):
    """argparse would accept --api-k for --api-key: a secret under a name no redaction knows, written to disk."""
    proc = run_loadgen(*argv, "--output", str(tmp_path / "o"), timeout=60)
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_training_bench_refuses_abbreviated_flags():
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run([sys.executable, "-m", "training_bench", "pretrain", "--mod", "tiny"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unrecognized arguments: --mod tiny" in proc.stderr
