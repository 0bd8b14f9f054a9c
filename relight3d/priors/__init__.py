"""2D priors that relight views or guide a radiance field (layer: models/priors).

Layout:

* :mod:`.base`: the :class:`RelightingPrior` contract (``relight`` / ``refine`` / ``sds_loss`` on a
  :class:`PriorViews`: views, masks, cameras, a target map and optional extras), its config base, per-view
  randomness and the square resizing every prior uses.
* :mod:`.registry`: the one table of relighting priors, ``PRIORS`` (name -> config class), the ``ns-train``
  subcommand union ``PriorChoice`` built from it and ``prior_config(name)`` for ``relight3d relight --prior``.
  Adding a prior is one new file here plus one line in that table.
* :mod:`.physical`: the weight-free default: inverse then forward shading of the field's G-buffers.
* :mod:`.diffusion`: the diffusion stack written once (component loading, prompts, classifier-free guidance,
  schedulers by name, sampling and SDEdit, the tiny test models in :mod:`.diffusion.testing`).
* :mod:`.latent_diffusion`: what the diffusion relighting priors share (views in and out, several devices,
  SDEdit refinement, score distillation); :mod:`.text_prompted`: per-view lighting prompts.
* One file per diffusion prior, holding only its conditioning and channel layout: :mod:`.neural_gaffer`
  (environment map in each camera's frame), :mod:`.instruct_pix2pix` (per-view lighting instructions),
  :mod:`.ic_light` (text + lighting-preview start + background).
* :mod:`.stable_diffusion` (score-distillation guidance of ``relight3d-sds``) and :mod:`.textual_inversion`
  (its learned token).
* :mod:`.lighting_description` (an environment map described in words, per camera) and :mod:`.normals`
  (surface normals from rendered points, fused across views).

Imports: :mod:`relight3d.lighting`, ``data``, ``eval``, ``geometry`` and :mod:`relight3d.errors`; never pipelines
or models. Importing this package does not import diffusers or transformers (they are imported when a prior is
built).

Example:
    >>> from relight3d.priors.registry import prior_config
    >>> prior = prior_config("neural-gaffer", model_path="weights/neural_gaffer").setup(device="cuda")  # doctest: +SKIP
    >>> relit = prior.relight(PriorViews(images, masks, camera_to_worlds, envmap, generator=0))  # doctest: +SKIP
"""

from relight3d.priors.base import (
    GeneratorLike,
    PriorError,
    PriorViews,
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
    "PriorViews",
    "RelightingPrior",
    "RelightingPriorConfig",
    "make_generators",
]
