"""Evaluation: retrieval and set metrics, the benchmark harness and its report."""
