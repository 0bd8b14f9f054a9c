"""``relight-unet``: a small deterministic relighting network that trains on a CPU (``relight3d train-prior
relight-unet`` on ``relight3d data render`` output), and needs no downloaded weights.

It is a correction to a physical estimate, not a generator. For each view:

1. **Ratio relighting** (the estimate): the linear image times ``E_target(n) / E_source(n)``, the diffuse
   irradiances (order-2 spherical harmonics, :func:`relight3d.lighting.sh_irradiance`) of the target and source maps
   at the view's normals ``n`` (world space), the source irradiance floored at ``shading_floor`` times its mean
   over the object. This is exact for a Lambertian surface without shadows under SH-band-limited light.
2. **A UNet** (diffusers ``UNet2DModel``, pixel space, a few million parameters, ``sample_size`` the working
   resolution) reads 16 channels at the working resolution: the estimate (sRGB), the input view (sRGB), the mask,
   the normals in the camera frame (x right, y up, z towards the viewer) and both irradiances divided by their mean
   over the object (where the light comes from, not how bright it is). It outputs an sRGB residual; its last layer
   starts at zero, so an untrained model is exactly the ratio relighting.
3. The residual is resized to the view's size and added to the estimate computed there, so the network's low
   working resolution blurs only the correction, never the view's texture; pixels outside the mask keep the input.

Training and inference build the network's inputs with the same function (:func:`relight_features`), so they
cannot disagree. The prior needs the field's normals (``multiview_normals`` when the pipeline fused them, else
``normals``; smoothed as the physical prior smooths them) and the source light (a given map or the pipeline's
estimate). Stage 2 (``refine``) has no noise to remove: it returns the renders unchanged.

Folder layout (``model_path``): ``unet/`` (``config.json`` + ``diffusion_pytorch_model.safetensors``, loaded with
``UNet2DModel.from_pretrained``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.lighting import project_sh, sh_irradiance
from relight3d.lighting.encodings import linear_to_srgb, srgb_to_linear
from relight3d.priors.base import (
    PriorError,
    PriorViews,
    RelightingPrior,
    RelightingPriorConfig,
    from_square,
    to_square,
)
from relight3d.priors.physical import masked_gaussian_blur

IN_CHANNELS = 16
"""Channels of the network's input (:func:`relight_features`)."""


@dataclass
class RelightUNetPriorConfig(RelightingPriorConfig):
    """A trained ``relight-unet`` folder (module docstring)."""

    _target: Type = field(default_factory=lambda: RelightUNetPrior)
    """Prior class to instantiate."""
    model_path: Optional[Path] = None
    """Folder written by ``relight3d train-prior relight-unet`` (``<output>/model``): ``unet/``."""
    shading_floor: float = 0.05
    """Smallest source irradiance divided by, as a share of its mean over the object."""
    normal_smoothing_pixels: float = 1.5
    """Gaussian sigma (pixels) of the masked blur applied to the normals, as the physical prior does."""


def _masked_mean(x: Tensor, masks: Tensor) -> Tensor:
    """Per-view mean of ``x`` ``[b, h, w, c]`` over the mask, ``[b, 1, 1, c]``."""
    weight = masks.clamp(0.0, 1.0)
    return (x * weight).sum((1, 2), keepdim=True) / weight.sum((1, 2), keepdim=True).clamp_min(1e-6)


def ratio_relight(
    images: Float[Tensor, "b h w 3"],
    masks: Float[Tensor, "b h w 1"],
    normals: Float[Tensor, "b h w 3"],
    source_sh: Float[Tensor, "9 3"],
    target_sh: Float[Tensor, "9 3"],
    floor: float,
) -> Tuple[Float[Tensor, "b h w 3"], Tensor, Tensor]:
    """``(estimate sRGB, source irradiance, target irradiance)``: step 1 of the module docstring."""
    linear = srgb_to_linear(images.clamp(0.0, 1.0))
    e_src = sh_irradiance(source_sh.to(normals), normals).clamp_min(0.0)
    e_tgt = sh_irradiance(target_sh.to(normals), normals).clamp_min(0.0)
    e_src_floor = e_src.clamp_min(1e-8) if floor <= 0 else torch.maximum(e_src, floor * _masked_mean(e_src, masks))
    estimate = linear_to_srgb((linear * e_tgt / e_src_floor.clamp_min(1e-8)).clamp(0.0, 1.0))
    return estimate, e_src, e_tgt


def relight_features(
    images: Float[Tensor, "b h w 3"],
    masks: Float[Tensor, "b h w 1"],
    normals: Float[Tensor, "b h w 3"],
    cameras: Float[Tensor, "b 3 4"],
    source_sh: Float[Tensor, "9 3"],
    target_sh: Float[Tensor, "9 3"],
    floor: float,
) -> Tuple[Float[Tensor, "b 16 h w"], Float[Tensor, "b h w 3"]]:
    """``(network input, estimate sRGB)`` of views at the working resolution (module docstring, step 2)."""
    estimate, e_src, e_tgt = ratio_relight(images, masks, normals, source_sh, target_sh, floor)
    rotation = cameras[:, :3, :3].to(normals)
    camera_normals = torch.einsum("bhwi,bij->bhwj", normals, rotation)  # R^T n: world -> camera axes
    relative = [e / _masked_mean(e, masks).mean(-1, keepdim=True).clamp_min(1e-8) for e in (e_src, e_tgt)]
    m = masks.clamp(0.0, 1.0)
    parts = [estimate * m, images * m, m, camera_normals * m, *(r.clamp(0.0, 8.0) * m for r in relative)]
    return torch.cat(parts, dim=-1).permute(0, 3, 1, 2).contiguous(), estimate


def build_unet(resolution: int, widths: Tuple[int, ...] = (32, 64, 128, 128)) -> Any:
    """A fresh ``UNet2DModel`` for :data:`IN_CHANNELS` inputs at ``resolution``, its output layer zeroed (so it starts
    as the ratio relighting)."""
    from diffusers import UNet2DModel

    unet = UNet2DModel(
        sample_size=resolution, in_channels=IN_CHANNELS, out_channels=3, block_out_channels=widths,
        layers_per_block=1, down_block_types=("DownBlock2D",) * len(widths),
        up_block_types=("UpBlock2D",) * len(widths), norm_num_groups=8,
    )  # fmt: skip
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.zero_()
    return unet


def predict_residual(unet: Any, features: Float[Tensor, "b 16 s s"]) -> Float[Tensor, "b 3 s s"]:
    """The network's sRGB residual (a fixed timestep of 0: the model is deterministic)."""
    timesteps = torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
    return unet(features, timesteps).sample


class RelightUNetPrior(RelightingPrior):
    """The ``relight-unet`` prior (module docstring)."""

    config: RelightUNetPriorConfig
    required_gbuffers = ("normals",)
    needs_source_envmap = True

    def __init__(self, config: RelightUNetPriorConfig, device: Union[str, torch.device] = "cpu", unet: Any = None):
        super().__init__(config, device)
        if unet is None:
            unet = self._load(config.model_path)
        self.unet = unet.to(self.device).eval().requires_grad_(False)

    def _load(self, path: Optional[Path]) -> Any:
        from diffusers import UNet2DModel

        if path is None:
            raise PriorError("relight-unet", "needs --prior-path: a folder from relight3d train-prior relight-unet")
        folder = Path(path) / "unet"
        if not (folder / "config.json").is_file():
            raise PriorError(path, "not a relight-unet folder (no unet/config.json; train one with relight3d "
                                   "train-prior relight-unet)")  # fmt: skip
        try:
            unet = UNet2DModel.from_pretrained(folder)
        except (OSError, ValueError, RuntimeError) as err:
            raise PriorError(path, f"cannot load unet/: {str(err).splitlines()[0]}") from None
        if unet.config.in_channels != IN_CHANNELS or unet.config.out_channels != 3:
            raise PriorError(path, f"unet/ takes {unet.config.in_channels} channels and gives "
                                   f"{unet.config.out_channels}; relight-unet needs {IN_CHANNELS} and 3")  # fmt: skip
        return unet

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size)

    def _normals(self, views: PriorViews) -> Tensor:
        gbuffers = views.gbuffers or {}
        if "normals" not in gbuffers:
            raise PriorError(self.error_path, "relight-unet needs the field's normals (gbuffers['normals'])")
        normals = gbuffers.get("multiview_normals", gbuffers["normals"]).float()
        if normals.shape[:3] != views.images.shape[:3]:
            raise PriorError(self.error_path, f"normals {tuple(normals.shape)} do not match the images")
        normals = F.normalize(normals, dim=-1, eps=1e-8)
        if self.config.normal_smoothing_pixels > 0.25:
            blurred = masked_gaussian_blur(normals, views.masks.float(), self.config.normal_smoothing_pixels)
            normals = F.normalize(blurred, dim=-1, eps=1e-8)
        return normals

    def relight_views(self, views: PriorViews) -> Float[Tensor, "b h w 3"]:
        if views.source_envmap is None:
            raise PriorError(self.error_path, "relight-unet needs the source light (source_envmap)")
        device = self.device
        images, masks = views.images.to(device).float(), views.masks.to(device).float()
        normals = self._normals(views).to(device)
        cameras = views.cameras.to(device).float()[:, :3, :4]
        source_sh, target_sh = (
            project_sh(views.source_envmap.to(device).float()),
            project_sh(views.target_envmap.to(device).float()),
        )
        floor = self.config.shading_floor
        estimate, _, _ = ratio_relight(images, masks, normals, source_sh, target_sh, floor)
        side = self.resolution
        small = [_square(x, side) for x in (images, masks, normals)]
        small_normals = F.normalize(small[2], dim=-1, eps=1e-8)
        features, _ = relight_features(small[0], small[1], small_normals, cameras, source_sh, target_sh, floor)
        with torch.no_grad():
            residual = predict_residual(self.unet, features.to(self.unet.dtype)).float()
        _, layout = to_square(images, side, 0.0)
        out = (estimate + from_square(residual, layout)).clamp(0.0, 1.0)
        return (masks * out + (1.0 - masks) * images).to(views.images.device)

    def refine_views(self, views: PriorViews, t_star: float) -> Float[Tensor, "b h w 3"]:
        """Deterministic: nothing to refine (module docstring)."""
        return views.images.float()


def _square(x: Tensor, side: int) -> Tensor:
    """``x`` ``[b, h, w, c]`` padded to a square with zeros and resized to ``side``, channel-last."""
    return to_square(x, side, 0.0)[0].permute(0, 2, 3, 1)


__all__ = ["IN_CHANNELS", "RelightUNetPrior", "RelightUNetPriorConfig", "build_unet", "ratio_relight",
           "relight_features", "predict_residual"]  # fmt: skip
