"""loadgen inside Locust: the locustfile (users, statistics, records to the master) and its options."""
