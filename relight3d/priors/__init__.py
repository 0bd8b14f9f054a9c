"""2D relighting priors: the contract (:mod:`relight3d.priors.base`) and the diffusion priors that implement it.

Each prior is selected and configured by its config class (nerfstudio style: ``config.setup(device=...)``):

* :class:`NeuralGafferPriorConfig`: Neural Gaffer, conditioned on the environment map in each camera's frame.
* :class:`InstructPix2PixPriorConfig`: InstructPix2Pix, driven by per-view lighting instructions.
* :class:`ICLightPriorConfig`: IC-Light (fc / fbc), lighting given as text + a lighting-preview start (+ background).
* :class:`PhysicalPriorConfig`: no weights; re-shading with relight3d's image-based-lighting shader.

Importing this package does not import diffusers or transformers (they are imported when a prior is built).

Example:
    >>> from relight3d.priors import NeuralGafferPriorConfig
    >>> prior = NeuralGafferPriorConfig(model_path=Path("weights/neural_gaffer")).setup(device="cuda")  # doctest: +SKIP
    >>> relit = prior.relight(images, masks, camera_to_worlds, envmap, generator=0)  # doctest: +SKIP
"""

from relight3d.priors.base import (
    GeneratorLike,
    PriorError,
    RelightingPrior,
    RelightingPriorConfig,
    make_generators,
)
from relight3d.priors.ic_light import ICLightPrior, ICLightPriorConfig
from relight3d.priors.instruct_pix2pix import InstructPix2PixPrior, InstructPix2PixPriorConfig
from relight3d.priors.latent_diffusion import LatentDiffusionPrior, LatentDiffusionPriorConfig
from relight3d.priors.neural_gaffer import NeuralGafferPrior, NeuralGafferPriorConfig
from relight3d.priors.physical import PhysicalPrior, PhysicalPriorConfig

__all__ = [
    "GeneratorLike",
    "ICLightPrior",
    "ICLightPriorConfig",
    "InstructPix2PixPrior",
    "InstructPix2PixPriorConfig",
    "LatentDiffusionPrior",
    "LatentDiffusionPriorConfig",
    "NeuralGafferPrior",
    "NeuralGafferPriorConfig",
    "PhysicalPrior",
    "PhysicalPriorConfig",
    "PriorError",
    "RelightingPrior",
    "RelightingPriorConfig",
    "make_generators",
]
