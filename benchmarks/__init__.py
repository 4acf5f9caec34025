"""Timed comparisons that write JSON; run as ``python -m benchmarks [--quick]``."""
