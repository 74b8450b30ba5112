"""Benchmarks (not tests): Stablehand against the raw OS limit measured in the same run."""
