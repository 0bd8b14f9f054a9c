"""Relightable fields: density, appearance features, colour and normals, with freezable geometry."""
