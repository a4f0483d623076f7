"""Benchmarks live here (make bench)."""
