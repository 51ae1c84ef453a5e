"""RunConfig: one typed model of a run, declared once. Flags, scenario files, sweep points and `loadgen locust`
build it through the same kinds, so they accept and refuse the same values."""

import argparse
import dataclasses
import json

import pytest

from conftest import read_requests, run_loadgen
from loadgen.cli.sweep import point_config
from loadgen.config import (
    RUN_SECTIONS,
    ConfigError,
    LoadConfig,
    RunConfig,
    SloConfig,
    SweepConfig,
    TargetConfig,
    WorkloadConfig,
    add_arguments,
    build_run_config,
    build_sweep_config,
    given,
    load_scenario,
    scenario_schema,
    to_flags,
)
from loadgen.config.assemble import load_plan
from loadgen.config.fields import flag_of, options
from loadgen.errors import LoadgenError
from loadgen.sweep import PointSize
from scenarios.catalog import CatalogError


def _parse(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    add_arguments(parser, RUN_SECTIONS)
    return given(parser.parse_args(argv))


def test_every_option_is_documented_and_is_a_flag_of_run():
    text = run_loadgen("run", "--help").stdout
    for section in RUN_SECTIONS.values():
        assert section.__doc__
        for name, spec in options(section):
            assert len(spec.help) > 20, name
            assert flag_of(name, spec) in text, name


def test_scenario_schema_is_derived_from_the_fields():
    schema = scenario_schema()
    keyed = {spec.scenario: spec for s in (*RUN_SECTIONS.values(), SweepConfig) for _, spec in options(s)
             if spec.scenario}
    for key, spec in keyed.items():
        node = schema
        for part in key.split("."):
            node = node[part]
        assert node == spec.kind.yaml_types, key
    assert schema["workload"]["input_len"] == (str, int) and schema["load_points"]["qps"] == (list,)


def test_values_are_typed_and_the_config_is_frozen():
    config = build_run_config(_parse(["--qps", "2.5", "--input-len", "uniform:5,9", "--duration", "1.5m",
                                      "--slo", "ttft:1s,tpot:50ms", "--backend", "vllm", "--model", "7b",
                                      "--engine-arg", "a", "--engine-arg", "b"]))
    assert config.load.qps == 2.5 and config.load.duration == 90.0
    assert str(config.workload.input_len) == "uniform:5,9" and config.workload.output_len.a == 128
    assert config.slo.limits_ms == {"ttft": 1000.0, "tpot": 50.0} and config.slo.text == "ttft:1s,tpot:50ms"
    assert config.target.engine_arg == ("a", "b") and config.target.backend == "vllm"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.load.qps = 3


@pytest.mark.parametrize("build,needle,field", [
    (lambda: LoadConfig(qps=-1), "--qps: -1 must be > 0", "qps"),
    (lambda: LoadConfig(qps="fast"), "--qps: 'fast' is not a valid number", "qps"),
    (lambda: LoadConfig(timeout="soon"), "--timeout: bad duration 'soon'", "timeout"),
    (lambda: LoadConfig(max_error_rate=2), "between 0 and 1", "max_error_rate"),
    (lambda: WorkloadConfig(input_len="gauss:1"), "bad --input-len 'gauss:1': unknown distribution", "input_len"),
    (lambda: TargetConfig(gpus=0), "--gpus: 0 must be > 0", "gpus"),
    (lambda: TargetConfig(url="localhost:8000"), "needs a scheme: write http://localhost:8000", "url"),
    (lambda: SloConfig(limits_ms="ttft:500"), "has no unit", "limits_ms"),
    (lambda: LoadConfig(qps=1, concurrency=2), "exclude each other", None),
    (lambda: TargetConfig(backend="openai"), "needs --url", None),
    (lambda: RunConfig(load=LoadConfig(arrival="trace")), "needs --dataset", None),
])
def test_a_bad_value_raises_one_error_naming_its_flag(build, needle, field):
    with pytest.raises(ConfigError) as err:
        build()
    assert needle in str(err.value) and err.value.field == field


def test_a_scenario_value_is_read_by_the_flags_kind(tmp_path):
    """The same value is refused the same way from a file and from a flag; the file's message names its field."""
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nversion: 1\ndescription: d\nduration: forever\n")
    with pytest.raises(CatalogError) as from_file:
        load_scenario(str(p))
    with pytest.raises(ConfigError) as from_flag:
        build_run_config(_parse(["--duration", "forever"]))
    assert str(from_file.value).endswith(f"field 'duration': {from_flag.value}")
    assert "bad duration 'forever'" in str(from_flag.value)
    assert isinstance(from_file.value, LoadgenError)  # the CLI's one error path


def test_precedence_flag_then_scenario_then_default():
    codegen = load_scenario("codegen")
    config = build_run_config(_parse(["--num-requests", "6", "--output-len", "16"]), codegen)
    assert config.load.num_requests == 6 and str(config.workload.output_len) == "fixed:16"  # flags
    assert str(config.workload.input_len) == "uniform:50,150" and config.load.qps == 1  # the scenario
    assert config.target.gpu == "h100" and config.load.timeout == 600.0  # defaults
    assert config.slo.text == "ttft:500ms,tpot:50ms" and config.scenario_name == "codegen"


def test_a_load_mode_flag_replaces_the_scenarios_whole(tmp_path):
    p = tmp_path / "closed.yaml"
    p.write_text("name: closed\nversion: 1\ndescription: d\narrival: {kind: closed, concurrency: 8}\n")
    scenario = load_scenario(str(p))
    assert build_run_config({}, scenario).load.concurrency == 8
    by_flag = build_run_config(_parse(["--qps", "3"]), scenario)
    assert by_flag.load.qps == 3 and by_flag.load.concurrency is None
    assert load_plan(by_flag).mode == "open" and load_plan(build_run_config({}, scenario)).mode == "closed"


def test_sweep_points_are_copies_of_the_run_config_with_their_load():
    scenario = load_scenario("chat")
    sweep = build_sweep_config({}, scenario)
    assert sweep.points() == [(1.0, None), (2.0, None), (4.0, None), (8.0, None), (16.0, None)]
    assert build_sweep_config({"sweep.concurrency": "2,4"}, scenario).points() == [(None, 2), (None, 4)]
    # both kinds in one sweep (one launch of the server): open-loop points first, then closed-loop ones
    assert build_sweep_config({"sweep.qps": "4,1", "sweep.concurrency": "8,2"}).points() == [
        (4.0, None), (1.0, None), (None, 8), (None, 2)]
    with pytest.raises(ConfigError, match="concurrency-2 is given more than once") as repeat:
        build_sweep_config({"sweep.qps": "1", "sweep.concurrency": "2,2"})
    assert repeat.value.field == "concurrency"
    config = build_run_config({}, scenario)
    point = point_config(config, None, 4, PointSize(None, 35.0, 4))
    plan = load_plan(point)
    assert plan.concurrency == 4 and plan.arrival is None and plan.duration_s == 35.0 and plan.warmup == 4
    assert point.workload == config.workload and config.load.qps == 4  # the sweep's own config is unchanged


def test_flags_written_from_a_config_read_back_to_it():
    """What `loadgen locust` hands its Locust processes: every workload field as text a flag reads."""
    workload = WorkloadConfig(input_len="lognormal:256,1", output_len=7, max_context=2048, tokenizer="tok.json",
                              seed=3, dataset="d.jsonl", dataset_format="sharegpt", multi_turn=True)
    load = LoadConfig(timeout=0.25)
    slo = SloConfig(limits_ms="ttft:1.5s,e2el:10s")
    argv = (to_flags(workload, tuple(n for n, _ in options(workload))) + to_flags(load, ("timeout",))
            + to_flags(slo, ("limits_ms",)) + to_flags(TargetConfig(ignore_eos=False), ("ignore_eos",)))
    back = build_run_config(_parse(argv))
    assert back.workload == workload and back.load.timeout == 0.25 and back.slo.limits_ms == slo.limits_ms
    assert back.target.ignore_eos is False


def test_a_point_reads_its_settings_from_the_run_config():
    from loadgen.point import point_settings

    config = build_run_config(_parse(["--slo", "ttft:1s", "--csv", "--gpu-telemetry", "--workers", "2"]))
    settings = point_settings(config)
    assert (settings.slo, settings.csv, settings.gpu_telemetry, settings.workers, settings.gpu) == (
        {"ttft": 1000.0}, True, True, 2, "h100")
    assert settings.slo.text == "ttft:1s"  # the SLO is parsed once, and remembers what was typed


def test_the_api_key_stays_out_of_repr():
    assert "sk-secret" not in repr(build_run_config(_parse(["--api-key", "sk-secret"])))


def test_locust_takes_a_scenario_an_slo_and_a_dataset(tmp_path):
    pytest.importorskip("locust")
    out = tmp_path / "scenario"
    proc = run_loadgen("locust", "--scenario", "codegen", "--output-len", "8", "--slo", "ttft:30s", "--headless",
                       "--users", "2", "--run-time", "3s", "--output", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = read_requests(out)
    assert records and all(50 <= r["input_tokens"] <= 150 and r["output_tokens"] == 8 for r in records)
    run = json.loads((out / "run.json").read_text())
    assert run["scenario"] == "codegen" and run["workload"]["input_len"] == "uniform:50,150"
    assert run["slo_ms"] == {"ttft": 30000.0}
    assert json.loads((out / "summary.json").read_text())["goodput"]["fraction"] is not None
    data = tmp_path / "dataset"
    proc = run_loadgen("locust", "--dataset", "prompts-sample.jsonl", "--output-len", "4", "--headless", "--users",
                       "2", "--run-time", "2s", "--output", str(data), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((data / "run.json").read_text())["workload"]["source"] == "dataset" and read_requests(data)


def test_locust_refuses_a_bad_workload_option_before_starting(tmp_path):
    proc = run_loadgen("locust", "--headless", "--users", "1", "--run-time", "1s", "--input-len", "gauss:1",
                       "--output", str(tmp_path / "r"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "unknown distribution" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_served_model_directory_lends_its_tokenizer_unless_one_is_given(tmp_path):
    """Prompts for a real server are sized with the served model's own tokenizer: sized in approximate words,
    LightLLM on the H200 prefilled about 950 tokens of each '512-token' prompt."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    url = ["--url", "http://127.0.0.1:9"]
    assert build_run_config(_parse([*url, "--model", str(model)])).workload.tokenizer is None  # no tokenizer there
    (model / "tokenizer.json").write_text("{}")
    assert build_run_config(_parse([*url, "--model", str(model)])).workload.tokenizer == str(model)
    assert build_run_config(_parse(["--backend", "vllm", "--model", str(model)])).workload.tokenizer == str(model)
    other = str(tmp_path / "other.json")
    given_one = build_run_config(_parse([*url, "--model", str(model), "--tokenizer", other]))
    assert given_one.workload.tokenizer == other
    assert build_run_config(_parse([*url, "--model", "7b"])).workload.tokenizer is None  # a name, not a directory
    # the sim counts one token per word, which the approximation gives exactly
    assert build_run_config(_parse(["--model", str(model)])).workload.tokenizer is None
