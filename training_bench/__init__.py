"""dissect training_bench: pre-training/fine-tuning runs and operator/communication micro-benchmarks."""
