"""The field's material head: its per-pixel targets, fitting it with geometry frozen, and material G-buffers.

The head (:class:`relight3d.fields.material.MaterialHead`) maps a surface point to linear base colour, roughness and
metallic. It is fitted to targets on the object pixels (accumulation above 0.5) of the training views, at those
pixels' surface points (``origin + depth * direction`` of the frozen field's render), from one of two sources
(:data:`MaterialSource`):

* ``"physical"`` (weight-free, the default): the physical prior's albedo estimate of each training image under the
  training light, with the field's normals and shadows
  (:meth:`relight3d.priors.physical.PhysicalPrior.estimate_albedo`); roughness is the physical prior's
  (``--pipeline.material-physical.roughness``, 0.5) and metallic 0, the dielectric it shades with. The albedo's
  scale is the source light's: exact with the training map known, up to the ``assumed_albedo`` normalisation when
  the light is estimated.
* ``"gbuffer-frames"``: base colour / roughness / metallic from DiffusionRenderer's inverse renderer run on the
  training images, in its ``gbuffer_frames`` layout (:func:`relight3d.data.gbuffer_frames.read_material_frames`).

The fit is a plain least-squares regression of the head's outputs (L2 on base colour, roughness and metallic, Adam),
on random object pixels; a surface point seen by several views gets the average of their targets, which is what
fusing the per-view estimates across views amounts to.
"""

from __future__ import annotations

from typing import Dict, Literal, Mapping

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from relight3d.fields.material import MATERIAL_CHANNELS, MaterialHead

MaterialSource = Literal["physical", "gbuffer-frames"]
"""Where the material head's targets come from (see the module docstring)."""


def needs_material(required_gbuffers: tuple) -> bool:
    """Whether a prior's ``required_gbuffers`` include a material G-buffer (so the field needs a fitted head)."""
    return any(name in MATERIAL_CHANNELS for name in required_gbuffers)


def physical_material_targets(
    albedo: Float[Tensor, "n h w 3"], roughness: float
) -> Dict[str, Float[Tensor, "n h w c"]]:
    """The ``"physical"`` targets: the prior's albedo estimate as base colour, a constant roughness, metallic 0."""
    ones = torch.ones_like(albedo[..., :1])
    return {"base_color": albedo, "roughness": ones * roughness, "metallic": ones * 0.0}


def fit_material_head(
    head: MaterialHead,
    points: Float[Tensor, "n h w 3"],
    foreground: Bool[Tensor, "n h w"],
    targets: Mapping[str, Tensor],
    steps: int,
    learning_rate: float = 1e-2,
    batch_size: int = 8192,
    seed: int = 0,
) -> float:
    """Fit ``head`` to ``targets`` (``{name: [n, h, w, c]}``, every key of :data:`MATERIAL_CHANNELS`) at the surface
    ``points`` of the ``foreground`` pixels; marks it fitted.

    Returns:
        The root-mean-square error of the fitted head over all foreground pixels and channels (in the targets'
        units: linear base colour, roughness, metallic).

    Raises:
        ValueError: no foreground pixel, or targets of the wrong shape.
    """
    fg = foreground.reshape(-1)
    count = int(fg.sum())
    if count == 0:
        raise ValueError("no object pixel to fit the material head to")
    device = head.aabb.device
    x = points.reshape(-1, 3)[fg].float().to(device)
    parts = []
    for name, channels in MATERIAL_CHANNELS.items():
        target = targets[name]
        if target.shape != (*points.shape[:3], channels):
            raise ValueError(
                f"material target {name}: expected {(*points.shape[:3], channels)}, got {tuple(target.shape)}"
            )
        parts.append(target.reshape(-1, channels)[fg].float())
    y = torch.cat(parts, dim=-1).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    with torch.enable_grad():
        for _ in range(steps):
            rows = torch.randint(count, (min(batch_size, count),), generator=generator).to(device)
            out = head(x[rows])
            loss = (torch.cat([out[k] for k in MATERIAL_CHANNELS], dim=-1) - y[rows]).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    head.fitted.fill_(True)
    with torch.no_grad():
        predicted = torch.cat([material_at(head, x)[k] for k in MATERIAL_CHANNELS], dim=-1)
    return float((predicted - y).square().mean().sqrt())


@torch.no_grad()
def material_at(head: MaterialHead, points: Float[Tensor, "m 3"], chunk: int = 65536) -> Dict[str, Tensor]:
    """The head's outputs at ``points`` (in chunks, without gradients)."""
    outs = [head(points[i : i + chunk].to(head.aabb.device)) for i in range(0, points.shape[0], chunk)]
    if not outs:
        return {k: points.new_zeros(0, c) for k, c in MATERIAL_CHANNELS.items()}
    return {k: torch.cat([o[k] for o in outs]).cpu() for k in MATERIAL_CHANNELS}


@torch.no_grad()
def material_gbuffers(
    head: MaterialHead, points: Float[Tensor, "n h w 3"], foreground: Bool[Tensor, "n h w"]
) -> Dict[str, Float[Tensor, "n h w c"]]:
    """``{"base_color", "roughness", "metallic"}`` G-buffers of rendered views: the head at each foreground pixel's
    surface point, 0 elsewhere (a G-buffer's background is its mask's business)."""
    values = material_at(head, points[foreground].float())
    out = {}
    for name, channels in MATERIAL_CHANNELS.items():
        image = torch.zeros(*points.shape[:3], channels)
        image[foreground.cpu()] = values[name]
        out[name] = image
    return out


__all__ = [
    "MaterialSource",
    "fit_material_head",
    "material_at",
    "material_gbuffers",
    "needs_material",
    "physical_material_targets",
]
