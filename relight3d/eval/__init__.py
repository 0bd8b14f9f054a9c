"""Evaluation: image metrics and comparison reports."""
