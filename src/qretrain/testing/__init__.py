"""Helpers for qretrain's own tests and benchmarks (tiny files, mutation fuzzing)."""
