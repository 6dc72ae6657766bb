"""Benchmarks: scripts that measure speed and quality; results in benchmarks/RESULTS.md."""
