"""An optional material head for relight3d's fields: base colour, roughness and metallic at surface points.

Priors that shade physically or condition on G-buffers (DiffusionRenderer) need more than a radiance field holds:
the object's *material*. The head is a small function of position only (a hash-grid encoding over the field's box,
relight3d's compiled op, then a two-layer MLP; sigmoid outputs), queried at the surface points of rendered views
(``origin + depth * direction``), not volume-rendered: a material is a property of the surface, and evaluating it
once per pixel keeps a G-buffer render as cheap as a lookup.

Outputs (:data:`MATERIAL_CHANNELS`), all in [0, 1]:

* ``base_color``: *linear* base colour (albedo), 3 channels (G-buffer writers encode it to sRGB where a format wants
  that, :func:`relight3d.data.gbuffer_frames.encode_base_color`);
* ``roughness``: perceptual roughness (as the shading model and glTF use it), 1 channel;
* ``metallic``: 1 channel.

The head is independent of the field's kind, so both ``relight3d-tensorf`` and ``relight3d-ngp`` carry the same one
(``--pipeline.model.material-head True``). It is never trained by the radiance loss: it is fitted afterwards, with the
geometry frozen, to per-pixel targets (the physical prior's albedo estimate, or inverse-rendered G-buffers on disk;
:mod:`relight3d.pipelines.relight_material`). Its ``fitted`` buffer records whether that happened, so a checkpoint
tells a fitted head from a fresh one.
"""

from __future__ import annotations

from typing import Dict

import torch
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.fields.base import mlp
from relight3d.fields.hash_encoding import HashEncoding

MATERIAL_CHANNELS: Dict[str, int] = {"base_color": 3, "roughness": 1, "metallic": 1}
"""The head's outputs (also the G-buffer names renders use) and their channels, in the order of the MLP's outputs."""


class MaterialHead(nn.Module):
    """Base colour / roughness / metallic at world points inside a box.

    Args:
        aabb: the field's box ``[xmin, ymin, zmin, xmax, ymax, zmax]`` (points outside are clamped to it).
        n_levels: hash-grid levels.
        log2_table_size: log2 of the rows per level.
        max_resolution: finest level's resolution (the coarsest is 8).
        hidden: width of the MLP's hidden layers.

    Example:
        >>> head = MaterialHead(torch.tensor([-1.0, -1, -1, 1, 1, 1]))
        >>> out = head(torch.zeros(4, 3))
        >>> tuple(out["base_color"].shape), tuple(out["roughness"].shape)
        ((4, 3), (4, 1))
    """

    def __init__(
        self,
        aabb: Float[Tensor, "6"],
        n_levels: int = 8,
        log2_table_size: int = 15,
        max_resolution: int = 256,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone().reshape(6))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.encoding = HashEncoding(n_levels, 2, log2_table_size, 8, max_resolution, implementation="torch")
        self.mlp = mlp(self.encoding.output_dim, hidden, 2, sum(MATERIAL_CHANNELS.values()))

    def forward(self, positions: Float[Tensor, "n 3"]) -> Dict[str, Float[Tensor, "n c"]]:
        """The material at world ``positions``: ``{"base_color": [n, 3], "roughness": [n, 1], "metallic": [n, 1]}``."""
        unit = ((positions - self.aabb[:3]) / (self.aabb[3:] - self.aabb[:3])).clamp(0.0, 1.0)
        values = torch.sigmoid(self.mlp(self.encoding(unit)))
        return dict(zip(MATERIAL_CHANNELS, values.split(list(MATERIAL_CHANNELS.values()), dim=-1)))


__all__ = ["MATERIAL_CHANNELS", "MaterialHead"]
