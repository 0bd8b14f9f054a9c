"""Inputs for the prior tests: small views, cameras and environment maps. The tiny random models come from
:mod:`relight3d.priors.diffusion.testing` (their only home).

(A module of its own, not conftest.py, so that ``from prior_fixtures import ...`` cannot pick up another
directory's conftest.)
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Dict, Optional, Tuple

import torch

from relight3d.geometry import look_at
from relight3d.priors.diffusion.components import IMAGE_PARTS, TEXT_PARTS
from relight3d.priors.ic_light import ICLightPriorConfig
from relight3d.priors.instruct_pix2pix import InstructPix2PixPriorConfig
from relight3d.priors.neural_gaffer import NeuralGafferPriorConfig

TINY_MODELS: Dict[type, Tuple[Tuple[str, ...], int]] = {
    NeuralGafferPriorConfig: (IMAGE_PARTS, 16),  # 16-channel UNet, VAE, CLIP image encoder, DDIM scheduler
    InstructPix2PixPriorConfig: (TEXT_PARTS, 8),  # 8-channel UNet, VAE, CLIP text encoder + tokenizer
    ICLightPriorConfig: (TEXT_PARTS, 8),  # IC-Light fc (noisy latent + foreground latent): the same architecture
}
"""Architecture of each diffusion prior's tiny random checkpoint: ``(components, UNet input channels)``."""

REAL_WEIGHTS: Dict[type, Tuple[str, Optional[str], str]] = {
    NeuralGafferPriorConfig: (
        "RELIGHT3D_NEURAL_GAFFER_PATH",
        "RELIGHT3D_NEURAL_GAFFER_UNET_CHECKPOINT",
        "Neural Gaffer's weights (a converted folder, or the Zero123-XL base with "
        "RELIGHT3D_NEURAL_GAFFER_UNET_CHECKPOINT=<checkpoint-80000>)",
    ),
    InstructPix2PixPriorConfig: ("RELIGHT3D_IP2P_PATH", None, "an InstructPix2Pix folder"),
    ICLightPriorConfig: (
        "RELIGHT3D_IC_LIGHT_PATH",
        "RELIGHT3D_IC_LIGHT_OFFSET",
        "an SD1.5 folder and RELIGHT3D_IC_LIGHT_OFFSET to iclight_sd15_fc.safetensors (or the path alone to a merged "
        "folder)",
    ),
}
"""Where the environment names each diffusion prior's real weights: ``(variable of model_path, variable of the UNet
weights merged over it (the field the prior's ``unet_weights_field`` names) or None, what they are)``."""


def camera_at(eye) -> torch.Tensor:
    """Blender/OpenGL camera-to-world [3, 4] at ``eye`` looking at the origin, world Z up."""
    return look_at(torch.as_tensor(eye, dtype=torch.float32))


def orbit_cameras(n: int, radius: float = 3.0, height: float = 1.0) -> torch.Tensor:
    """``n`` cameras on a circle around the origin (the first at +X), looking at it: [n, 3, 4]."""
    angles = torch.linspace(0, 2 * math.pi, n + 1)[:-1]
    eyes = torch.stack([radius * angles.cos(), radius * angles.sin(), torch.full_like(angles, height)], dim=-1)
    return look_at(eyes)


def sun_envmap(
    direction, height: int = 16, sun: float = 20.0, sky: float = 0.2, colour=(1.0, 0.9, 0.8)
) -> torch.Tensor:
    """A dim uniform sky plus a bright disc (about 25 degrees wide) towards world ``direction``: [h, 2h, 3]."""
    from relight3d.lighting import envmap_directions

    d = torch.nn.functional.normalize(torch.as_tensor(direction, dtype=torch.float32), dim=0)
    disc = (envmap_directions(height, 2 * height) @ d > math.cos(math.radians(25))).float()[..., None]
    return sky + sun * disc * torch.tensor(colour)


def disc_views(n: int, height: int = 20, width: int = 24, seed: int = 1):
    """``n`` views of a coloured, shaded disc on white: images [n, h, w, 3] and masks [n, h, w, 1]."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    mask = ((x / 0.8) ** 2 + (y / 0.7) ** 2 < 1.0).float()[..., None]
    colours = torch.rand(n, 1, 1, 3, generator=g) * 0.6 + 0.2
    shading = (0.6 + 0.4 * x)[None, ..., None]
    images = (colours * shading).clamp(0, 1) * mask + (1 - mask)
    return images, mask.expand(n, height, width, 1).contiguous()


def seeded(*seeds: int):
    """Fresh CPU generators with these seeds (one per view), for comparing two runs with the same noise."""
    return [torch.Generator().manual_seed(s) for s in seeds]


def reference_pipeline(pipeline_class, components, concat_for: Optional[Callable[[int], torch.Tensor]] = None):
    """A diffusers ``pipeline_class`` over ``components`` (with its own copy of their scheduler), the reference the
    priors are checked against. With ``concat_for``, its UNet appends ``concat_for(batch)`` to the noisy latents of
    each call and says it takes 4 channels: how the concat-conditioned priors (IC-Light, Neural Gaffer) drive it."""
    unet = components.unet
    if concat_for is not None:
        unet = copy.deepcopy(unet)
        original = unet.forward

        def forward(sample, timestep, encoder_hidden_states, **kwargs):
            extra = concat_for(sample.shape[0]).to(sample)
            return original(torch.cat([sample, extra], dim=1), timestep, encoder_hidden_states, **kwargs)

        unet.forward = forward
        unet.register_to_config(in_channels=4)
    pipe = pipeline_class(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer, unet=unet,
        scheduler=copy.deepcopy(components.scheduler), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe
