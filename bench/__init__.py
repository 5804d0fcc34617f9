"""Measures the other packages: latency, throughput and accuracy across backends; the paper's table."""
