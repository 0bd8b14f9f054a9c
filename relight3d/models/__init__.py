"""Radiance-field models (pure fields: no priors inside)."""
