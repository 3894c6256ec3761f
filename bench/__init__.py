"""Benchmarks of the gateway: ``python -m bench`` (see :mod:`bench.run`).

Each scenario starts what it needs on loopback, in separate processes (the
gateway, a baseline to compare it with, a load generator), measures for a
bounded time and returns table rows; the harness prints them and writes
docs/benchmarks.md.
"""
