"""Benchmarks of the registered networks (``python -m benchmarks.model_table``)."""
