"""Load: what a run sends and when (plans.py), and the runner that sends it from this process (runner.py) or
from client worker processes (processes.py, worker.py), with one record sink, error limit and stop signal."""

from loadgen.load.plans import LoadPlan
from loadgen.load.runner import LoadOutcome, LocalRunner, Runner, run_load

__all__ = ["LoadOutcome", "LoadPlan", "LocalRunner", "Runner", "run_load"]
