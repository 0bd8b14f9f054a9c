"""Latent-diffusion priors told the target light in words: one prompt per view, relative to the view's camera.

The same map gives "light from the left" in one view and "light from behind" in another:
:func:`~relight3d.priors.lighting_description.summarize_lighting` reads the light's direction, hardness and colour
off the map in each camera's frame, and each prior (:mod:`~relight3d.priors.instruct_pix2pix`,
:mod:`~relight3d.priors.ic_light`) turns that description into its prompt (:meth:`TextPromptedPrior.prompt_for`).
The model is a text-conditioned Stable Diffusion layout: ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Tuple

from jaxtyping import Float
from torch import Tensor

from relight3d.priors.diffusion.components import TEXT_PARTS, DiffusionComponents
from relight3d.priors.latent_diffusion import LatentDiffusionPrior, LatentDiffusionPriorConfig, ViewChunk
from relight3d.priors.lighting_description import summarize_lighting


@dataclass
class TextPromptedPriorConfig(LatentDiffusionPriorConfig):
    """Settings of the priors driven by per-view lighting prompts."""

    negative_prompt: str = ""
    """Text of the unconditional guidance branch."""


@dataclass
class TextCondition:
    """The prompts of a batch of views and their CLIP embeddings."""

    prompts: List[str]
    """One prompt per view."""
    text_embeds: Float[Tensor, "b n d"]
    """Embeddings of the prompts."""
    negative_embeds: Float[Tensor, "b n d"]
    """Embeddings of the negative prompt (one copy per view)."""


class TextPromptedPrior(LatentDiffusionPrior):
    """A latent-diffusion prior conditioned on a per-view description of the target light."""

    config: TextPromptedPriorConfig
    component_names: ClassVar[Tuple[str, ...]] = TEXT_PARTS

    def prompt_for(self, lighting: str) -> str:
        """The prompt of a view whose light is described as ``lighting`` (e.g. "hard warm light from the left")."""
        raise NotImplementedError

    def prompts(self, cameras: Float[Tensor, "b 3 4"], target_envmap: Float[Tensor, "H W 3"]) -> List[str]:
        """The prompt of each view."""
        return [self.prompt_for(summarize_lighting(target_envmap, c2w).describe()) for c2w in cameras]

    def text_condition(self, replica: DiffusionComponents, chunk: ViewChunk) -> TextCondition:
        """The prompts of the chunk's views, and their and the negative prompt's embeddings."""
        prompts = self.prompts(chunk.views.cameras, chunk.views.target_envmap)
        negative = replica.encode_prompts([self.config.negative_prompt] * len(prompts))
        return TextCondition(prompts, replica.encode_prompts(prompts), negative)
