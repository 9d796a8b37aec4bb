"""Benchmark harness: registries, runner, metrics, result store and report."""

__version__ = "0.1.0"
