"""Scripts that print speed figures: python -m benchmarks.<name> from the repository root."""
