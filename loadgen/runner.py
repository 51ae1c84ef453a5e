"""The run loop moved to loadgen/load/; these names stay importable from here for callers not yet switched."""

from loadgen.load.plans import LoadPlan
from loadgen.load.runner import LoadOutcome, run_load

__all__ = ["LoadOutcome", "LoadPlan", "run_load"]
