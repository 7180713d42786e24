"""`make bench`: throughput, latency, lag and memory of the hub's pipeline on the local stack (see run.py)."""
