"""Benchmarks: each measures Firewatch next to a baseline taken in the same run.

Figures are ratios against that baseline, never absolute goals asserted in tests; every
benchmark prints a table and, with ``--json``, one JSON object as its last line.
"""
