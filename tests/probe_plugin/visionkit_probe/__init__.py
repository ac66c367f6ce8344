"""A test-only third-party plugin with a non-classification task: brightness regression on dict batches."""
