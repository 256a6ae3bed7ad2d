"""Benchmarks of Sequences against reference implementations: `python -m bench --help`."""
