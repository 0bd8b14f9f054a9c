"""Kept for imports written before :mod:`relight3d.errors` existed: ``DataError`` lives there now."""

from relight3d.errors import DataError

__all__ = ["DataError"]
