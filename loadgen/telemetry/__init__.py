"""What is sampled beside the requests: the server's Prometheus metrics and this host's GPUs."""
