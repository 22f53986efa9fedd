"""Benchmarks: each module measures against a baseline taken in the same run and prints one
JSON line per figure. Run one with ``python -m benchmarks.<name>``, all with ``python -m benchmarks``."""
