"""Benchmark CLI: `python -m benchmarks {run,fanout,load}`."""
