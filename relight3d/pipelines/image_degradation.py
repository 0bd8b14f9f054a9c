"""New lighting for an object photo: random lights, their rendering from albedo + normals, and their description.

Frames. Normals and directional lights are in **camera coordinates** (OpenGL: x right, y up, z towards the viewer;
the view is orthographic, along -z). Environment maps are in relight3d's **world** frame (+Z up, Blender's
convention, :mod:`relight3d.lighting.equirect`), seen by :data:`SYNTHESIS_CAMERA_TO_WORLD`: a camera at the origin
looking horizontally along world +Y with world +Z up (so a map's sky is above the object and its horizon around
it). A camera-frame vector ``v`` is ``R @ v`` in the world, ``R`` the rotation block of that matrix.

Lights (:func:`random_light` draws them; ``to_record()`` is what ``triplets.jsonl`` stores):

* :class:`DirectionalLight`: a distant light of colour ``colour`` from ``direction`` plus a uniform ambient light of
  the same colour, and a Blinn-Phong highlight; with ``l`` the light direction, ``v = (0, 0, 1)`` the view direction,
  ``h = normalize(l + v)``, ``a`` the ambient fraction, ``V`` the cast-shadow visibility (:func:`screen_space_shadow`)::

      rgb = albedo * colour * (a + (1 - a) * max(0, n.l) * V)
            + specular * colour * (1 - a) * max(0, n.h)^shininess * V * [n.l > 0]

  Its equivalent map (for the description) is the uniform ambient radiance ``a * colour`` plus a 12-degree cone
  around ``R @ direction`` holding ``pi (1 - a) * colour`` of power, which gives the same Lambertian shading
  without shadows.
* :class:`EnvironmentLight`: one of the maps, turned by ``rotation_deg`` about world up, shaded with
  :func:`relight3d.lighting.shade` (order-2 SH Lambertian diffuse + split-sum GGX specular of a dielectric with
  ``roughness``), no cast shadows.

:func:`describe_light` is the light in words, from :func:`relight3d.priors.lighting_description.summarize_lighting`
of the light's (equivalent) map seen by :data:`SYNTHESIS_CAMERA_TO_WORLD`, e.g. ``"hard warm light from the upper
left"``. :func:`match_exposure` scales a rendering so that its mean in-mask luminance is the photo's.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

SYNTHESIS_CAMERA_TO_WORLD = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
"""The camera (OpenGL camera-to-world, 3x4) that sees the photo: at the origin, looking along world +Y, +Z up."""
SUN_CONE_DEGREES = 12.0
"""Half-angle of the cone that stands for a directional light in its equivalent environment map."""
DESCRIPTION_ENVMAP_HEIGHT = 32
"""Height of the equivalent map of a directional light."""
SHADOW_BIAS = 1.0
"""Height (pixels) by which an occluder must rise above the shadow ray to cast a shadow (hides the stair steps of
a pixel-sampled height field)."""


@dataclass(frozen=True)
class DirectionalLight:
    """A distant light with an ambient term and a Blinn-Phong highlight (model in the module docstring)."""

    direction: Tuple[float, float, float]
    """Unit vector towards the light, camera frame (x right, y up, z towards the viewer)."""
    colour: Tuple[float, float, float]
    """Linear RGB of the light, largest channel 1."""
    ambient: float
    """Fraction of the shading that comes from the uniform ambient light, in [0, 1]."""
    specular: float
    """Strength of the Blinn-Phong highlight."""
    shininess: float
    """Blinn-Phong exponent."""

    def to_record(self) -> Dict[str, Any]:
        """The JSON form stored in ``triplets.jsonl``."""
        return {
            "kind": "directional",
            "direction": [round(v, 6) for v in self.direction],
            "colour": [round(v, 6) for v in self.colour],
            "ambient": round(self.ambient, 6),
            "specular": round(self.specular, 6),
            "shininess": round(self.shininess, 6),
        }


@dataclass(frozen=True)
class EnvironmentLight:
    """One of the environment maps, turned about world up (model in the module docstring)."""

    envmap: str
    """File name of the map in the env maps folder."""
    rotation_deg: float
    """Turn of the map's content about world +Z (counter-clockwise seen from above), degrees."""
    roughness: float
    """GGX roughness of the object's (dielectric) specular reflection."""

    def to_record(self) -> Dict[str, Any]:
        """The JSON form stored in ``triplets.jsonl`` (with the camera that sees the map)."""
        return {
            "kind": "environment",
            "envmap": self.envmap,
            "rotation_deg": round(self.rotation_deg, 6),
            "roughness": round(self.roughness, 6),
            "camera_to_world": SYNTHESIS_CAMERA_TO_WORLD.tolist(),
        }


Light = Union[DirectionalLight, EnvironmentLight]
"""Either kind of light."""


def _random_colour(rng: np.random.Generator) -> Tuple[float, float, float]:
    """White, warm (pale orange), cool (pale blue) or a tinted colour (saturation 0.5 to 0.8), largest channel 1."""
    kind = int(rng.integers(4))
    u = float(rng.random())
    if kind == 0:
        return (1.0, 1.0, 1.0)
    if kind == 1:
        return (1.0, 0.92 - 0.1 * u, 0.78 - 0.18 * u)
    if kind == 2:
        return (0.78 - 0.15 * u, 0.88 - 0.08 * u, 1.0)
    return tuple(float(c) for c in colorsys.hsv_to_rgb(float(rng.random()), 0.5 + 0.3 * u, 1.0))


def random_light(rng: np.random.Generator, envmap_names: Sequence[str], directional_fraction: float) -> Light:
    """A random light: directional with probability ``directional_fraction`` (always when there are no maps).

    Directional: from the viewer's side (``z`` uniform in [0.1, 0.85], azimuth about the view axis uniform),
    colour white / warm / cool / tinted, ambient fraction in [0.02, 0.12] (so the description says ``hard``),
    highlight strength in [0.05, 0.4], shininess log-uniform in [8, 96]. Environment: a map drawn uniformly, turned
    by a uniform angle in [0, 360) degrees, roughness in [0.25, 0.8].
    """
    if not envmap_names or float(rng.random()) < directional_fraction:
        z = float(rng.uniform(0.1, 0.85))
        phi = float(rng.uniform(0.0, 2.0 * math.pi))
        planar = math.sqrt(1.0 - z * z)
        return DirectionalLight(
            direction=(planar * math.cos(phi), planar * math.sin(phi), z),
            colour=_random_colour(rng),
            ambient=float(rng.uniform(0.02, 0.12)),
            specular=float(rng.uniform(0.05, 0.4)),
            shininess=float(math.exp(rng.uniform(math.log(8.0), math.log(96.0)))),
        )
    name = str(envmap_names[int(rng.integers(len(envmap_names)))])
    return EnvironmentLight(name, float(rng.uniform(0.0, 360.0)), float(rng.uniform(0.25, 0.8)))


def _world_rotation() -> Tensor:
    return SYNTHESIS_CAMERA_TO_WORLD[:3, :3]


def light_envmap(light: Light, envmaps: Mapping[str, Float[Tensor, "H W 3"]]) -> Float[Tensor, "H W 3"]:
    """The light as a world-frame map: the turned map, or a directional light's equivalent map (module docstring)."""
    from relight3d.lighting import envmap_directions, envmap_solid_angles, rotate_envmap_about_up

    if isinstance(light, EnvironmentLight):
        return rotate_envmap_about_up(envmaps[light.envmap].float(), math.radians(light.rotation_deg))
    height = DESCRIPTION_ENVMAP_HEIGHT
    colour = torch.tensor(light.colour, dtype=torch.float32)
    world = _world_rotation() @ torch.tensor(light.direction, dtype=torch.float32)
    cosine = envmap_directions(height, 2 * height) @ F.normalize(world, dim=0)
    cone = (cosine - math.cos(math.radians(SUN_CONE_DEGREES))).clamp_min(0.0)
    cone = cone / (cone * envmap_solid_angles(height, 2 * height)).sum()
    return light.ambient * colour + (math.pi * (1.0 - light.ambient)) * cone[..., None] * colour


def describe_light(light: Light, envmaps: Mapping[str, Float[Tensor, "H W 3"]]) -> str:
    """The light in words as seen from the photo's camera, e.g. ``"hard warm light from the upper left"``.

    Example:
        >>> describe_light(DirectionalLight((-0.6, 0.6, 0.5), (1.0, 0.8, 0.6), 0.05, 0.2, 32.0), {})
        'hard warm light from the upper left'
    """
    from relight3d.priors.lighting_description import summarize_lighting

    return summarize_lighting(light_envmap(light, envmaps), SYNTHESIS_CAMERA_TO_WORLD).describe()


def screen_space_shadow(
    height: Float[Tensor, "h w"], direction: Tuple[float, float, float], bias: float = SHADOW_BIAS
) -> Float[Tensor, "h w"]:
    """Visibility (1 lit, 0 shadowed) of a directional light over a height field, by marching towards the light.

    Orthographic: from pixel ``p`` at height ``h(p)``, the ray towards the light ``(lx, ly, lz)`` (camera frame)
    moves one pixel per step along ``(lx, -ly) / |(lx, ly)|`` in (column, row) and rises ``lz / |(lx, ly)|``
    pixels; ``p`` is shadowed when the height field (bilinear) is above the ray by more than ``bias`` at any step
    inside the image. A light along the view axis casts no shadow.

    Example:
        >>> field = torch.zeros(8, 16); field[:, 4] = 20.0  # a wall at column 4
        >>> vis = screen_space_shadow(field, (-0.9, 0.0, 0.44))  # low light from the left
        >>> vis[4, 2].item(), vis[4, 8].item()  # left of the wall lit, right of it in shadow
        (1.0, 0.0)
    """
    lx, ly, lz = (float(v) for v in direction)
    planar = math.hypot(lx, ly)
    rows, cols = height.shape
    if planar < 1e-3:
        return torch.ones(rows, cols)
    step_col, step_row, rise = lx / planar, -ly / planar, lz / planar
    field = height.float()[None, None]
    row_idx, col_idx = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32),
                                      indexing="ij")  # fmt: skip
    top = float(height.max())
    steps = math.ceil(math.hypot(rows, cols))
    if rise > 0:
        steps = min(steps, math.ceil(top / rise) + 1)
    excess = torch.full((rows, cols), -math.inf)
    for k in range(1, steps + 1):
        c, r = col_idx + k * step_col, row_idx + k * step_row
        grid = torch.stack([(c + 0.5) / cols * 2.0 - 1.0, (r + 0.5) / rows * 2.0 - 1.0], dim=-1)[None]
        sample = F.grid_sample(field, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]
        excess = torch.maximum(excess, sample - k * rise)
    return (excess - height.float() <= bias).float()


def render_relit(
    albedo: Float[Tensor, "h w 3"],
    normals: Float[Tensor, "h w 3"],
    height: Float[Tensor, "h w"],
    light: Light,
    envmaps: Mapping[str, Float[Tensor, "H W 3"]],
) -> Float[Tensor, "h w 3"]:
    """Linear radiance of the object under ``light`` (module docstring), not clipped, exposure not matched.

    Args:
        albedo: linear albedo.
        normals: unit normals, camera frame.
        height: the height field in pixels (for a directional light's cast shadows).
        light: the light.
        envmaps: the linear world-frame maps by file name (for an :class:`EnvironmentLight`).
    """
    if isinstance(light, DirectionalLight):
        colour = torch.tensor(light.colour, dtype=torch.float32)
        to_light = F.normalize(torch.tensor(light.direction, dtype=torch.float32), dim=0)
        half = F.normalize(to_light + torch.tensor([0.0, 0.0, 1.0]), dim=0)
        n_dot_l = normals @ to_light
        visible = screen_space_shadow(height, light.direction) * (n_dot_l > 0).float()
        diffuse = light.ambient + (1.0 - light.ambient) * n_dot_l.clamp_min(0.0) * visible
        highlight = (normals @ half).clamp_min(0.0) ** light.shininess * visible
        return (
            albedo * colour * diffuse[..., None]
            + (light.specular * (1.0 - light.ambient)) * highlight[..., None] * colour
        )
    from relight3d.lighting import PrefilteredEnvmap, shade

    env = PrefilteredEnvmap.from_envmap(light_envmap(light, envmaps), n_levels=4, base_height=32)
    rotation = _world_rotation()
    world_normals = normals @ rotation.T
    view = (rotation @ torch.tensor([0.0, 0.0, -1.0])).expand_as(world_normals)
    return shade(world_normals, view, albedo, light.roughness, 0.0, env)["rgb"]


def match_exposure(
    image: Float[Tensor, "h w 3"], reference: Float[Tensor, "h w 3"], mask: Float[Tensor, "h w"]
) -> Float[Tensor, "h w 3"]:
    """``image`` scaled so that its mean luminance inside ``mask > 0.5`` equals ``reference``'s (both linear)."""
    from relight3d.pipelines.image_intrinsics import luminance

    inside = mask > 0.5
    if not bool(inside.any()):
        return image
    target = luminance(reference)[inside].mean()
    current = luminance(image)[inside].mean()
    return image * (target / current.clamp_min(1e-8))


__all__ = [
    "DESCRIPTION_ENVMAP_HEIGHT",
    "DirectionalLight",
    "EnvironmentLight",
    "Light",
    "SHADOW_BIAS",
    "SUN_CONE_DEGREES",
    "SYNTHESIS_CAMERA_TO_WORLD",
    "describe_light",
    "light_envmap",
    "match_exposure",
    "random_light",
    "render_relit",
    "screen_space_shadow",
]
