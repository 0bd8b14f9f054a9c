"""The one list of relighting priors: name -> config class, and what ``ns-train`` and ``relight3d relight`` build.

:data:`PRIORS` is the only place a prior is named. ``ns-train relight3d-gaffer`` offers its entries as tyro
subcommands (``pipeline.prior:<name>``, through :data:`PriorChoice`), ``relight3d relight --prior <name>`` builds
them with :func:`prior_config`, and the tests walk the table. Adding a prior is one new file under
``relight3d/priors/`` with its config class, plus one line here.

An entry is a zero-argument factory of a config: the config class itself for relight3d's defaults, or a *preset*, a
function returning the same class with other field values. The ``-public`` presets reproduce the authors' released
inference code (steps, scheduler, guidance, resolution; the README's prior table lists them beside the defaults),
e.g. ``pipeline.prior:ic-light-public`` or ``relight3d relight --prior ic-light-public``; every field of a preset
can still be overridden on the command line.

Importing this module is cheap: the prior modules import diffusers only when a prior is built.

Example:
    >>> config = prior_config("neural-gaffer", model_path="weights/neural_gaffer")
    >>> prior = config.setup(device="cuda")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Dict, Optional, Union

import tyro

from relight3d.errors import ConfigError
from relight3d.priors.base import RelightingPriorConfig
from relight3d.priors.difareli import DiFaReliPriorConfig
from relight3d.priors.diffusion_renderer import DiffusionRendererPriorConfig
from relight3d.priors.ic_light import ICLightPriorConfig
from relight3d.priors.instruct_pix2pix import InstructPix2PixPriorConfig
from relight3d.priors.neural_gaffer import NeuralGafferPriorConfig
from relight3d.priors.physical import PhysicalPriorConfig
from relight3d.priors.relight_unet import RelightUNetPriorConfig

DEFAULT_PRIOR = "physical"
"""The prior used when none is named: it needs no weights."""

PRIORS: Dict[str, Callable[[], RelightingPriorConfig]] = {
    "physical": PhysicalPriorConfig,
    "neural-gaffer": NeuralGafferPriorConfig,
    "neural-gaffer-public": NeuralGafferPriorConfig.public_preset,
    "ic-light": ICLightPriorConfig,
    "ic-light-public": ICLightPriorConfig.public_preset,
    "instruct-pix2pix": InstructPix2PixPriorConfig,
    "instruct-pix2pix-public": InstructPix2PixPriorConfig.public_preset,
    "diffusion-renderer": DiffusionRendererPriorConfig,
    "difareli": DiFaReliPriorConfig,
    "relight-unet": RelightUNetPriorConfig,
}
"""Every relighting prior and preset, by the name ``ns-train`` (``pipeline.prior:<name>``) and ``relight3d relight
--prior`` use, as a factory of its config; the default (:data:`DEFAULT_PRIOR`) comes first."""


def prior_union(priors: Dict[str, Callable[[], RelightingPriorConfig]]) -> object:
    """The tyro subcommand union of ``priors``' configs, each under its table name with its factory's values."""
    defaults = {name: factory() for name, factory in priors.items()}
    choices = tuple(
        Annotated[type(config), tyro.conf.subcommand(name=name, default=config)] for name, config in defaults.items()
    )
    return Union[choices] if len(choices) > 1 else choices[0]  # type: ignore[return-value]


PriorChoice = prior_union(PRIORS)
"""The priors ``ns-train relight3d-gaffer`` can use, chosen as ``pipeline.prior:<name>`` (default: physical)."""


def prior_config(name: str, model_path: Optional[Union[str, Path]] = None) -> RelightingPriorConfig:
    """A fresh config of the prior called ``name``.

    Args:
        name: A key of :data:`PRIORS`.
        model_path: The local checkpoint folder, for priors that load weights (``None`` keeps the default).

    Raises:
        ConfigError: ``name`` is not a registered prior (``--prior``), or ``model_path`` was given to a prior that
            loads no weights (``--prior-path``).
    """
    if name not in PRIORS:
        raise ConfigError("--prior", f"unknown prior {name!r}; known priors: {', '.join(PRIORS)}")
    config = PRIORS[name]()
    if model_path is not None:
        if not hasattr(config, "model_path"):
            raise ConfigError("--prior-path", f"the {name} prior loads no weights")
        config.model_path = Path(model_path)
    return config


def prior_name(config: RelightingPriorConfig) -> str:
    """The registry name of ``config``'s prior (its first entry of that config class: ``"neural-gaffer"`` for a
    ``NeuralGafferPriorConfig``, preset or not), what reports and summaries call it; a config class that is not in
    the table gets its class name."""
    for name, factory in PRIORS.items():
        if type(factory()) is type(config):
            return name
    return type(config).__name__


__all__ = ["DEFAULT_PRIOR", "PRIORS", "PriorChoice", "prior_config", "prior_name", "prior_union"]
