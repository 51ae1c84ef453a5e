"""The simulated engine: config.py (what it stands for), roofline.py and profile_cost.py (what a step costs),
scheduler.py (continuous batching), pipeline.py (the CPU/GPU and front-end clocks), engine.py (the live engine
thread), server.py (its OpenAI-compatible HTTP server), replay.py (the same engine in virtual time, no HTTP),
command.py (`python -m backends.sim`). It imports no framework adapter: it stands in for any of them."""
