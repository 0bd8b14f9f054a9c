"""Relightable fields: density, appearance features, colour and normals of world points, with freezable geometry.

Layer: ``fields`` (with ``lighting``, ``data``, ``eval``, ``export``), below ``models``; imports only ``ops`` (the VM
sampling op) and relight3d's optional-dependency helpers.

* :mod:`relight3d.fields.base`: :class:`RelightableField`, what every field offers and shares (the box and zero
  density outside it, normals by autograd or finite differences, the density blob, geometry freezing, nerfstudio's
  ``Field`` interface), the spherical-harmonics direction encoding and the MLP builder.
* :mod:`relight3d.fields.ngp_field`: Instant-NGP (hash grid, density MLP, colour MLP) and its settings.
* :mod:`relight3d.fields.tensorf_field`: TensoRF-VM (plane and line factors, resampling) and its settings.
* :mod:`relight3d.fields.hash_encoding`: the multiresolution hash encoding (relight3d's op, or tinycudann on CUDA).
"""
