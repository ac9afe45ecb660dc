"""Conductor's benchmarks: what the router costs, measured against a baseline in the same run.

Run everything with ``python -m benchmarks`` (``--quick`` for the small CI size); each
benchmark also runs alone, e.g. ``python -m benchmarks.bench_overhead --quick``. Results
go to ``benchmarks/results/<name>.json``; BENCHMARKS.md explains the method and figures.
"""
