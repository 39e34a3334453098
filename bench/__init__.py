"""Benchmarks: each prints a table and writes its figures as JSON under bench/results/."""
