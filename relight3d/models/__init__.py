"""Radiance-field models: pure fields that render, with their reconstruction losses (no priors inside).

Layer: ``models`` (with ``priors``), below ``pipelines``; imports ``fields``, ``eval`` (image metrics), ``ops`` and
``geometry``, never a prior or a pipeline.

* :mod:`relight3d.models.base`: the one renderer. :class:`OccupancyFieldModel` marches rays through its occupancy
  grid (``march``) and composites rgb, accumulation, depth and named G-buffers (``render_rays``); it also owns the
  occupancy-grid callbacks, the RGB loss and the evaluation metrics.
* :mod:`relight3d.models.samples`: the packed samples a march keeps and the G-buffer table (normals, albedo,
  appearance features, orientation loss), plus the per-sample ``Shader`` type.
* :mod:`relight3d.models.ngp`: relight3d-ngp (Instant-NGP hash grid).
* :mod:`relight3d.models.tensorf`: relight3d-tensorf (TensoRF-VM, progressive upsampling and box shrinking).
* :mod:`relight3d.models.sds`: the score-distillation variants of both: Lambertian / textureless shading as a
  per-sample post-step of ``render_rays``, the density blob, coarse-to-fine hash-grid masking.

A model's config extends its field's settings (``NGPFieldSettings``, ``TensoRFFieldSettings``), so each setting is
declared once and the field is built from the config.
"""
