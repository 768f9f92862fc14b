"""Benchmarks: one module per benchmark, run as `python -m benchmarks.<name>` or through `make bench-*`."""
