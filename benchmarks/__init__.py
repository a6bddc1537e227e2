"""Benchmarks for a3redis: a load generator and harness run against real server processes.

`python -m benchmarks.run` (or `nox -s bench`) runs every case; see README.md.
"""
