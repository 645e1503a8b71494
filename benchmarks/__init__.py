"""Solver benchmarks for flexassign: ``python -m benchmarks [--quick]``.

See :mod:`benchmarks.run` for what is measured and ``docs/benchmarks.md`` for results.
"""
