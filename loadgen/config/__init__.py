"""The run configuration: one typed, frozen, documented model of a run (RunConfig), the options of sweep and
locust beside it, and how flags and scenario files build them.

    kinds.py          how a value is read (flags and YAML alike), and ConfigError
    fields.py         the field declaration (`option`) and the Section base that checks values once
    run.py            RunConfig and its sections: target, workload, load, slo, output, telemetry
    commands.py       SweepConfig and LocustConfig
    scenario_file.py  scenario files: schema derived from the fields, values read by the same kinds
    sources.py        flags generated from the fields; precedence flag > scenario > default
    assemble.py       what a RunConfig makes: the load plan and the workload
"""

from loadgen.config.commands import LocustConfig, SweepConfig, point_name
from loadgen.config.kinds import ConfigError
from loadgen.config.run import (
                                DEFAULT_NUM_REQUESTS,
                                DEFAULT_QPS,
                                RUN_SECTIONS,
                                TRACE,
                                LoadConfig,
                                OutputConfig,
                                RunConfig,
                                SloConfig,
                                TargetConfig,
                                TelemetryConfig,
                                WorkloadConfig,
)
from loadgen.config.scenario_file import ScenarioError, list_scenarios, load_scenario, scenario_schema
from loadgen.config.sources import add_arguments, build_run_config, build_sweep_config, given, to_flags

__all__ = [
    "ConfigError", "DEFAULT_NUM_REQUESTS", "DEFAULT_QPS", "LoadConfig", "LocustConfig", "point_name", "OutputConfig",
    "RUN_SECTIONS", "RunConfig", "ScenarioError", "SloConfig", "SweepConfig", "TRACE", "TargetConfig",
    "TelemetryConfig", "WorkloadConfig", "add_arguments", "build_run_config", "build_sweep_config", "given",
    "list_scenarios", "load_scenario", "scenario_schema", "to_flags",
]
