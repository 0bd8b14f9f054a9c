"""Environment lighting: .hdr/.exr I/O, the equirectangular convention, rotation, encodings, SH and a shader.

Layer: ``fields`` / ``lighting`` / ``data`` / ``eval`` / ``export`` (above ``ops``, ``geometry`` and ``errors``; the
models, priors and pipelines use it). Everything is torch (float32 linear radiance, CPU or CUDA) and differentiable
where it makes sense. The world is Z up and maps follow Blender's world Environment Texture convention.

Modules:

* :mod:`~relight3d.lighting.envmap_io`: read and write .exr / .hdr maps, with one-line errors for bad files.
* :mod:`~relight3d.lighting.equirect`: directions, solid angles, sampling, resizing and rotations of maps.
* :mod:`~relight3d.lighting.encodings`: sRGB and the LDR / HDR encodings the diffusion priors take.
* :mod:`~relight3d.lighting.spherical_harmonics`: order-2 SH projection, evaluation and irradiance.
* :mod:`~relight3d.lighting.shading`: prefiltered maps and the diffuse + GGX shader.
* :mod:`~relight3d.lighting.visibility`: cast shadows through a density volume.
* :mod:`~relight3d.lighting.estimate`: the source light estimated from a field.
* :mod:`~relight3d.lighting.summary`: summaries and previews of a map; :mod:`~relight3d.lighting.cli`:
  ``relight3d envmap``.

Names are resolved lazily (PEP 562), so ``import relight3d.lighting.cli`` (done by every ``relight3d`` command) does
not import torch, OpenCV or OpenEXR.

Example:
    >>> from relight3d.lighting import PrefilteredEnvmap, read_envmap, shade  # doctest: +SKIP
    >>> env = PrefilteredEnvmap.from_envmap(read_envmap("courtyard.exr"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Tuple

_MODULES: Dict[str, Tuple[str, ...]] = {
    "envmap_io": ("EnvMapError", "read_envmap", "write_envmap"),
    "equirect": (
        "envmap_directions", "envmap_solid_angles", "directions_to_uv", "uv_to_directions", "sample_envmap",
        "resize_envmap", "rotate_envmap", "rotate_envmap_to_camera", "rotate_envmap_about_up", "rotation_about_up",
        "camera_frame_rotation", "dominant_light_direction",
    ),
    "encodings": ("ldr_encoding", "hdr_encoding", "linear_to_srgb", "srgb_to_linear"),
    "spherical_harmonics": ("sh_basis", "project_sh", "eval_sh", "sh_irradiance"),
    "shading": ("PrefilteredEnvmap", "shade", "diffuse_shading", "env_brdf_approx", "prefilter_ggx", "irradiance_map"),
    "visibility": (
        "sample_density_volume", "transmittance_towards", "shadow_factor", "occluded_fraction", "visibility_directions",
    ),
    "summary": ("summarize_envmap", "preview_envmap"),
}  # fmt: skip
"""The public names, by the module that defines them."""
_EXPORTS: Dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'relight3d.lighting' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"relight3d.lighting.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_EXPORTS))
