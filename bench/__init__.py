"""Benchmarks. Targets are ratios against a baseline measured in the same run."""
