"""Benchmarks behind `hwnas bench ...`: commands that print the README's figures."""
