"""Environment lighting: .hdr/.exr I/O, the equirectangular convention, rotation, encodings, SH and a shader.

Everything is torch (float32 linear radiance, CPU or CUDA) and differentiable where it makes sense. The world is
Z up and maps follow Blender's world Environment Texture convention (see :mod:`relight3d.lighting.equirect`).

Names are resolved lazily (PEP 562), so ``import relight3d.lighting.cli`` (done by every ``relight3d`` command) does
not import torch, OpenCV or OpenEXR.

Example:
    >>> from relight3d.lighting import PrefilteredEnvmap, read_envmap, shade  # doctest: +SKIP
    >>> env = PrefilteredEnvmap.from_envmap(read_envmap("courtyard.exr"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict

_EXPORTS: Dict[str, str] = {
    # I/O
    "EnvMapError": "envmap_io",
    "read_envmap": "envmap_io",
    "write_envmap": "envmap_io",
    # convention, sampling, rotation
    "envmap_directions": "equirect",
    "envmap_solid_angles": "equirect",
    "directions_to_uv": "equirect",
    "uv_to_directions": "equirect",
    "sample_envmap": "equirect",
    "resize_envmap": "equirect",
    "rotate_envmap": "equirect",
    "rotate_envmap_to_camera": "equirect",
    "rotate_envmap_about_up": "equirect",
    "rotation_about_up": "equirect",
    "camera_frame_rotation": "equirect",
    "dominant_light_direction": "equirect",
    # encodings
    "ldr_encoding": "encodings",
    "hdr_encoding": "encodings",
    "linear_to_srgb": "encodings",
    "srgb_to_linear": "encodings",
    # spherical harmonics
    "sh_basis": "spherical_harmonics",
    "project_sh": "spherical_harmonics",
    "eval_sh": "spherical_harmonics",
    "sh_irradiance": "spherical_harmonics",
    # shading
    "PrefilteredEnvmap": "shading",
    "shade": "shading",
    "diffuse_shading": "shading",
    "env_brdf_approx": "shading",
    "prefilter_ggx": "shading",
    "irradiance_map": "shading",
    # visibility (cast shadows)
    "sample_density_volume": "visibility",
    "transmittance_towards": "visibility",
    "shadow_factor": "visibility",
    "occluded_fraction": "visibility",
    "visibility_directions": "visibility",
    # summaries
    "summarize_envmap": "summary",
    "preview_envmap": "summary",
}

__all__ = [
    "EnvMapError",
    "PrefilteredEnvmap",
    "camera_frame_rotation",
    "diffuse_shading",
    "directions_to_uv",
    "dominant_light_direction",
    "env_brdf_approx",
    "envmap_directions",
    "envmap_solid_angles",
    "eval_sh",
    "hdr_encoding",
    "ldr_encoding",
    "linear_to_srgb",
    "prefilter_ggx",
    "irradiance_map",
    "preview_envmap",
    "project_sh",
    "read_envmap",
    "resize_envmap",
    "rotate_envmap",
    "rotate_envmap_about_up",
    "rotate_envmap_to_camera",
    "rotation_about_up",
    "sample_density_volume",
    "sample_envmap",
    "shadow_factor",
    "occluded_fraction",
    "sh_basis",
    "sh_irradiance",
    "shade",
    "srgb_to_linear",
    "summarize_envmap",
    "transmittance_towards",
    "uv_to_directions",
    "visibility_directions",
    "write_envmap",
]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'relight3d.lighting' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"relight3d.lighting.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from relight3d.lighting.encodings import hdr_encoding, ldr_encoding, linear_to_srgb, srgb_to_linear
    from relight3d.lighting.envmap_io import EnvMapError, read_envmap, write_envmap
    from relight3d.lighting.equirect import (
        camera_frame_rotation,
        directions_to_uv,
        dominant_light_direction,
        envmap_directions,
        envmap_solid_angles,
        resize_envmap,
        rotate_envmap,
        rotate_envmap_about_up,
        rotate_envmap_to_camera,
        rotation_about_up,
        sample_envmap,
        uv_to_directions,
    )
    from relight3d.lighting.shading import (
        PrefilteredEnvmap,
        diffuse_shading,
        env_brdf_approx,
        irradiance_map,
        prefilter_ggx,
        shade,
    )
    from relight3d.lighting.spherical_harmonics import eval_sh, project_sh, sh_basis, sh_irradiance
    from relight3d.lighting.summary import preview_envmap, summarize_envmap
    from relight3d.lighting.visibility import (
        occluded_fraction,
        sample_density_volume,
        shadow_factor,
        transmittance_towards,
        visibility_directions,
    )
