"""Listeners on a run's events (loadgen/run_events.py): each one does one job as records arrive or the run ends."""
