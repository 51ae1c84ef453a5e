"""dissect loadgen: the serving load tester."""
