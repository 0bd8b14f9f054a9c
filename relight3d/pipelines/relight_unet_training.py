"""``relight3d train-prior relight-unet``: train the small deterministic relighting network of
:mod:`relight3d.priors.relight_unet` on a rendered relighting dataset (``relight3d data render``).

A sample is a pair of one view under two lights (:class:`~relight3d.data.relight_pairs.LightPairs`): the
view under light A with its G-buffers is the input, light A's map the source light, light B's map the target, and
the view under light B what the network must produce. Its inputs are made by the prior's own
:func:`~relight3d.priors.relight_unet.relight_features`; the loss is the mean squared sRGB error inside the view's
mask (the coverage of its G-buffers).

The dataset's normals are the mesh's, exact; at inference the prior gets the field's, which err by 10-25 degrees
at low frequency. Training therefore perturbs the normals (``normal_noise_degrees``): a random smooth field of
tilts, drawn from the sample's generator, then the masked blur the prior applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from relight3d.data.relight_pairs import LightPairs
from relight3d.lighting import project_sh
from relight3d.pipelines.prior_training import PriorTask, PriorValidationConfig, validation_indices
from relight3d.priors.physical import masked_gaussian_blur
from relight3d.priors.relight_unet import RelightUNetPriorConfig, build_unet, predict_residual, relight_features


@dataclass
class RelightUNetTaskConfig:
    """What ``relight3d train-prior relight-unet`` trains on and from."""

    data: Path
    """The relighting dataset folder (``manifest.jsonl``; ``relight3d data render``)."""
    init: Optional[Path] = None
    """A ``relight-unet`` folder to continue from (``unet/``); default: a fresh network."""
    resolution: int = 64
    """Working resolution of a fresh network (the dataset's images are resized to it)."""
    widths: Tuple[int, ...] = (16, 32, 64, 128)
    """Channels of a fresh network's levels."""
    normal_noise_degrees: float = 12.0
    """Standard deviation of the smooth tilt added to the dataset's normals (0: none)."""
    validation: PriorValidationConfig = field(default_factory=PriorValidationConfig)
    """Validation images: input, ratio estimate, prediction, target of a few fixed pairs (``steps > 0`` turns them
    on; the network is deterministic, so the number of steps does not matter)."""


def perturb_normals(normals: Tensor, masks: Tensor, degrees: float, generator: torch.Generator) -> Tensor:
    """``normals`` ``[h, w, 3]`` tilted by a smooth random field (8x8 grid, bicubic, std ``degrees`` per tangent
    axis), renormalised."""
    if degrees <= 0:
        return normals
    h, w, _ = normals.shape
    coarse = torch.randn(1, 3, 8, 8, generator=generator) * (torch.pi * degrees / 180.0)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    tangent = field - (field * normals).sum(-1, keepdim=True) * normals  # only tilt, no stretch along n
    return F.normalize(normals + tangent.to(normals), dim=-1, eps=1e-8)


class RelightUNetTask(PriorTask):
    """The ``relight-unet`` training task (module docstring)."""

    def __init__(self, config: RelightUNetTaskConfig, prior_config: Optional[RelightUNetPriorConfig] = None) -> None:
        self.config = config
        self.prior_config = prior_config or RelightUNetPriorConfig()
        self.pairs = LightPairs(config.data)
        if config.init is not None:
            from diffusers import UNet2DModel

            self.unet = UNet2DModel.from_pretrained(Path(config.init) / "unet")
        else:
            self.unet = build_unet(config.resolution, tuple(config.widths))
        self._sh: Dict[Tuple[str, float], Tensor] = {}

    def trained_module(self) -> torch.nn.Module:
        return self.unet

    def dataset_size(self) -> int:
        return len(self.pairs)

    def to(self, device: torch.device) -> None:
        self.device = device

    def _light(self, index: int, envmap: Tensor) -> Tensor:
        record = self.pairs.samples.records[index]
        key = (str(record["envmap"]), record["envmap_rotation_deg"])
        if key not in self._sh:
            self._sh[key] = project_sh(envmap)
        return self._sh[key]

    def batch(self, indices: Sequence[int], generators: Sequence[torch.Generator]) -> Tuple[Tensor, Tensor, Tensor]:
        """``(features [b, 16, s, s], estimate [b, s, s, 3], target [b, s, s, 3], mask [b, s, s, 1])`` of pairs."""
        side = int(self.unet.config.sample_size)
        rows = {"feat": [], "est": [], "target": [], "mask": []}
        for index, g in zip(indices, generators):
            a, b = self.pairs.pairs[index]
            src, tgt = self.pairs.samples[a], self.pairs.samples[b]
            views = [x[None] for x in (src.image, src.frame.mask, src.frame.normals, tgt.image)]
            if src.image.shape[0] != side or src.image.shape[1] != side:
                from relight3d.priors.base import to_square

                views = [to_square(x, side, 0.0)[0].permute(0, 2, 3, 1) for x in views]
            image, mask, normals, target = views
            mask = mask.clamp(0.0, 1.0)
            normals = perturb_normals(F.normalize(normals[0], dim=-1, eps=1e-8), mask[0],
                                      self.config.normal_noise_degrees, g)[None]  # fmt: skip
            sigma = self.prior_config.normal_smoothing_pixels
            if sigma > 0.25:
                normals = F.normalize(masked_gaussian_blur(normals, mask, sigma), dim=-1, eps=1e-8)
            cameras = src.frame.camera_to_world[None, :3, :4].float()
            feat, est = relight_features(image, mask, normals, cameras, self._light(a, src.envmap),
                                         self._light(b, tgt.envmap), self.prior_config.shading_floor)  # fmt: skip
            for key, value in zip(rows, (feat, est, target, mask)):
                rows[key].append(value)
        return tuple(torch.cat(v) for v in rows.values())  # type: ignore[return-value]

    def loss(self, network: torch.nn.Module, indices: Sequence[int], generators: Sequence[torch.Generator]) -> Tensor:
        device = next(network.parameters()).device
        features, estimate, target, mask = (x.to(device) for x in self.batch(indices, generators))
        residual = predict_residual(network, features).permute(0, 2, 3, 1)
        error = ((estimate + residual).clamp(0.0, 1.0) - target) ** 2 * mask
        return error.sum() / (3.0 * mask.sum().clamp_min(1.0))

    validation_columns = 4

    def validation_images(self, network: torch.nn.Module, generator: torch.Generator) -> Optional[Tensor]:
        """Input, ratio estimate, prediction and target of a few fixed pairs (normals not perturbed)."""
        if self.config.validation.steps <= 0:
            return None
        indices = validation_indices(len(self.pairs), self.config.validation.samples)
        noise, self.config.normal_noise_degrees = self.config.normal_noise_degrees, 0.0
        try:
            features, estimate, target, mask = self.batch(indices, [generator] * len(indices))
        finally:
            self.config.normal_noise_degrees = noise
        device = next(network.parameters()).device
        residual = predict_residual(network, features.to(device)).permute(0, 2, 3, 1).cpu()
        prediction = (estimate + residual).clamp(0.0, 1.0)
        inputs = features[:, 3:6].permute(0, 2, 3, 1)
        cells = [x * mask + (1.0 - mask) for x in (inputs, estimate, prediction, target)]
        return torch.stack(cells, dim=1).flatten(0, 1).clamp(0.0, 1.0)

    def save_model(self, network: torch.nn.Module, folder: Path) -> None:
        network.save_pretrained(folder / "unet")


__all__ = ["RelightUNetTask", "RelightUNetTaskConfig", "perturb_normals"]
