"""`loadgen plan`: the simulated engine as a capacity planner (search, feasibility, ranking, confidence, reports)."""
