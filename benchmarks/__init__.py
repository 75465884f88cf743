"""Scripts that print speed, accuracy and reliability figures: run `python -m benchmarks.NAME` from the repository root."""
