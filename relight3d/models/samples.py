"""The samples a ray march keeps, packed, and the per-ray G-buffers composited from them.

:meth:`relight3d.models.base.OccupancyFieldModel.march` returns a :class:`PackedSamples`;
:meth:`~relight3d.models.base.OccupancyFieldModel.render_rays` composites it into rgb, accumulation, depth and the
:data:`GBUFFERS` asked for by name, after an optional per-sample :data:`Shader`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Dict, Optional

import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from relight3d.fields.base import RelightableField
from relight3d.ops import accumulate_along_rays


@dataclass
class PackedSamples:
    """The visible samples of a batch of rays, packed: sample ``i`` lies on ray ``ray_ids[i]``.

    The per-sample G-buffers :attr:`albedo` and :attr:`normals` are evaluated on first use, so that a render pays
    only for what it reads.
    """

    field: RelightableField
    """The field that was marched."""
    ray_ids: Int[Tensor, " s"]
    """Ray of each sample."""
    midpoints: Float[Tensor, " s"]
    """Distance of each sample along its ray (the middle of its step)."""
    positions: Float[Tensor, "s 3"]
    """World position of each sample."""
    directions: Float[Tensor, "s 3"]
    """Unit direction of each sample's ray."""
    weights: Float[Tensor, " s"]
    """Rendering weight (transmittance times opacity) of each sample."""
    features: Float[Tensor, "s f"]
    """Appearance features of each sample."""
    n_rays: int
    """Rays in the batch."""
    n_marched: int
    """Samples marched before the invisible ones were dropped."""
    normals_fn: Callable[[Tensor], Tensor]
    """Unit normals at positions (the model's normals method)."""

    @cached_property
    def albedo(self) -> Float[Tensor, "s 3"]:
        """The field's colour at each sample, before any shading."""
        return self.field.color(self.features, self.directions)

    @cached_property
    def normals(self) -> Float[Tensor, "s 3"]:
        """Unit outward normal at each sample."""
        return self.normals_fn(self.positions)

    def composite(self, values: Optional[Tensor], detach_weights: bool = False) -> Float[Tensor, "n c"]:
        """Per ray, the weighted sum of per-sample ``values`` ``[s, c]`` (of the weights alone when None)."""
        weights = self.weights.detach() if detach_weights else self.weights
        return accumulate_along_rays(weights, values, self.ray_ids, self.n_rays)


Shader = Callable[[PackedSamples], Float[Tensor, "s 3"]]
"""A per-sample shading post-step: the colour of each sample from its G-buffers (``albedo``, ``normals``)."""


def _orientation_loss(samples: PackedSamples) -> Tensor:
    facing_away = (samples.normals * samples.directions).sum(-1).clamp_min(0.0).square()
    return samples.composite(facing_away[:, None], detach_weights=True)


GBUFFERS: Dict[str, Callable[[PackedSamples], Tensor]] = {
    "normals": lambda s: F.normalize(s.composite(s.normals), dim=-1, eps=1e-6),
    "accumulated_normals": lambda s: s.composite(s.normals),
    "appearance_features": lambda s: s.composite(s.features),
    "albedo": lambda s: s.composite(s.albedo),
    "orientation_loss": _orientation_loss,
}
"""The optional per-ray outputs of :meth:`OccupancyFieldModel.render_rays`, by name:

* ``normals``: the weighted sum of the samples' unit normals, normalised (zero on empty rays);
* ``accumulated_normals``: the same sum, not normalised (shorter where the ray is partly clear or normals disagree);
* ``appearance_features``: the weighted sum of the samples' appearance features;
* ``albedo``: the weighted sum of the field's unshaded colour, with no background;
* ``orientation_loss`` (Ref-NeRF): ``sum_i w_i max(0, n_i . d)^2`` with the weights detached, which penalises
  visible normals facing away from the camera.
"""
