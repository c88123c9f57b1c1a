"""Turning results into files, figures and TensorBoard records."""
