"""Benchmarks (not tests): ``python -m bench`` prints ratios against peers measured in the same run."""
