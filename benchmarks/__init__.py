"""Timed comparisons with JSON output; not part of the unit suite."""
