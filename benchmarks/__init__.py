"""Scripts that print speed and robustness figures: python -m benchmarks.<name> from the repository root."""
