"""Runnable reproductions of the papers' tables: ``python -m experiments <name> [--quick]``."""
