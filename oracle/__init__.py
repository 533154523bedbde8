"""The truth: exact mpmath references for the softmax family, correct rounding, error metrics."""
