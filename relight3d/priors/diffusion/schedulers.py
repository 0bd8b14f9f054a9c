"""Noise schedulers by name, built on a model's own noise schedule.

A checkpoint's ``scheduler/`` folder describes its training noise schedule (betas, prediction type, timestep
spacing). Which sampler runs it is a setting: :func:`make_scheduler` builds the diffusers scheduler of that name
from the checkpoint's schedule, so every prior and the score-distillation guidance get the same construction.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, Literal, Mapping, Sequence, Tuple, Union

import torch

from relight3d.errors import ConfigError, WeightsError, reading

SchedulerName = Literal["ddim", "ddpm", "pndm", "euler", "euler-ancestral", "dpm-solver", "dpm++-2m-sde-karras"]
"""Samplers a config can choose."""

SCHEDULERS: Dict[str, str] = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm-solver": "DPMSolverMultistepScheduler",
    "dpm++-2m-sde-karras": "DPMSolverMultistepScheduler",
}
"""Scheduler name -> diffusers class name."""

DEFAULTS: Dict[str, Dict[str, Any]] = {
    "ddim": {"clip_sample": False},
    "dpm++-2m-sde-karras": {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True, "solver_order": 2},
}
"""Settings applied unless overridden: DDIM runs without sample clipping (as Neural Gaffer and IC-Light run it);
DPM++ 2M SDE Karras is diffusers' multistep DPM-Solver with the sampler arguments IC-Light's ``gradio_demo.py`` passes
(second order, the SDE variant of DPM-Solver++, Karras sigmas)."""


def make_scheduler(name: str, schedule: Mapping[str, Any], option: str = "scheduler", **overrides: Any) -> Any:
    """The diffusers scheduler called ``name`` with the noise schedule ``schedule`` (a scheduler's ``config``).

    Example:
        >>> ddim = make_scheduler("ddim", pipeline.scheduler.config)  # doctest: +SKIP

    Raises:
        ConfigError: ``name`` is not a key of :data:`SCHEDULERS` (``option`` names the setting).
    """
    if name not in SCHEDULERS:
        raise ConfigError(option, f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    import diffusers

    settings = {**DEFAULTS.get(name, {}), **overrides}
    return getattr(diffusers, SCHEDULERS[name]).from_config(dict(schedule), **settings)


def load_scheduler(model_path: Path, name: str, option: str = "scheduler") -> Any:
    """The scheduler ``name`` on the schedule of ``model_path/scheduler/scheduler_config.json``.

    Raises:
        WeightsError: the scheduler config is missing or unreadable.
    """
    from diffusers import DDPMScheduler

    folder = Path(model_path) / "scheduler"
    with reading(folder, "a scheduler config", error=WeightsError):
        schedule = DDPMScheduler.load_config(str(model_path), subfolder="scheduler", local_files_only=True)
    return make_scheduler(name, schedule, option)


def step_kwargs(
    scheduler: Any, eta: float, generator: Union[None, torch.Generator, Sequence[torch.Generator]]
) -> Dict[str, Any]:
    """The ``eta`` / ``generator`` arguments that ``scheduler.step`` accepts (as diffusers' pipelines pass them)."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: Dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted and generator is not None:
        kwargs["generator"] = list(generator) if isinstance(generator, (list, tuple)) else generator
    return kwargs


def timestep_range(scheduler: Any, fractions: Sequence[float]) -> Tuple[int, int]:
    """``(low, high)`` training timesteps for fractions ``(a, b)`` of the schedule (e.g. (0.02, 0.98))."""
    total = int(scheduler.config.num_train_timesteps)
    return int(total * fractions[0]), int(total * fractions[1])
