"""Benchmarks behind `hwnas bench ...`: commands that print the figures in docs/benchmarks.md."""
