"""Datasets children learn from, loaded once per worker and kept resident as tensors."""
