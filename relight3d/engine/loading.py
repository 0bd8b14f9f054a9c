"""Load a trained relight3d pipeline from its ``config.yml`` and latest checkpoint, with one-line errors.

This is what ``ns-render`` / ``ns-export`` do through nerfstudio's ``eval_setup``, made safe for scripted use: every
foreseeable mistake (a missing or foreign config, no checkpoint, moved training data, a checkpoint of another
method) raises a :class:`~relight3d.errors.DataError` whose message is one line, instead of an assertion, a
``sys.exit`` or a traceback. Configs are read without running code (:mod:`relight3d.engine.safe_config`) and
checkpoints with ``weights_only``. Export, relighting and evaluation all load runs through
:func:`load_trained_pipeline`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Tuple, Union

import torch
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import Pipeline

from relight3d.engine.safe_config import load_run_config
from relight3d.engine.trainer import check_model_weights, latest_checkpoint, load_checkpoint_file
from relight3d.errors import DataError, one_line


def read_trainer_config(config_path: Union[str, Path]) -> TrainerConfig:
    """The ``TrainerConfig`` saved by ``ns-train`` in ``config.yml``; must be a config of a relight3d method.

    The file is read with :class:`relight3d.engine.safe_config.RunConfigLoader`: it may only build relight3d and
    nerfstudio config classes, paths and plain values, so a downloaded run cannot run code when it is loaded.

    Raises:
        DataError: the file is missing, is not a nerfstudio config, holds a tag the safe loader refuses (code, a
            class outside relight3d / nerfstudio), refers to classes that cannot be imported, or configures a
            method whose model is not a relight3d model.
    """
    from relight3d.models.base import OccupancyFieldModel

    path = Path(config_path)
    if path.is_dir():
        path = path / "config.yml"
    if not path.exists():
        raise DataError(path, "config file not found (expected the config.yml that ns-train wrote)")
    config = load_run_config(path)
    if not isinstance(config, TrainerConfig):
        raise DataError(path, f"not a nerfstudio TrainerConfig (found {type(config).__name__})")
    model_config = getattr(getattr(config, "pipeline", None), "model", None)
    target = getattr(model_config, "_target", None)
    if not (isinstance(target, type) and issubclass(target, OccupancyFieldModel)):
        raise DataError(
            path,
            f"config of method '{config.method_name}', which is not a relight3d method "
            "(expected relight3d-tensorf, relight3d-ngp or another relight3d model)",
        )
    return config


def checkpoint_dir(config: TrainerConfig, config_path: Path) -> Path:
    """Where the run's checkpoints are: beside ``config.yml`` (so moved runs still load), else where it says."""
    beside = config_path.parent / config.relative_model_dir
    return beside if beside.is_dir() else Path(config.get_checkpoint_dir())


def load_trained_pipeline(
    config_path: Union[str, Path],
    device: Union[str, torch.device] = "cpu",
    data: Optional[Union[str, Path]] = None,
    step: Optional[int] = None,
    test_mode: Literal["test", "val", "inference"] = "inference",
) -> Tuple[TrainerConfig, Pipeline]:
    """Rebuild the pipeline of a finished (or running) relight3d run and load its latest checkpoint.

    Args:
        config_path: the run's ``config.yml`` (or the folder holding it).
        device: where the pipeline is put.
        data: the training data folder, when it has moved since training (default: the path in the config).
        step: load this step's checkpoint instead of the latest.
        test_mode: nerfstudio's datamanager mode; ``"inference"`` reads cameras but no images.

    Returns:
        The config (with ``load_dir`` set to the checkpoint folder) and the pipeline in eval mode.

    Raises:
        DataError: (one line) for a missing or foreign config, missing training data, a missing checkpoint, or a
            checkpoint that does not fit the config.

    Example:
        >>> config, pipeline = load_trained_pipeline("outputs/scene/relight3d-tensorf/2024-01-01_000000/config.yml")
        >>> mesh = extract_mesh(pipeline.model)  # doctest: +SKIP
    """
    path = Path(config_path)
    if path.is_dir():
        path = path / "config.yml"
    config = read_trainer_config(path)

    datamanager = config.pipeline.datamanager
    if data is not None:
        datamanager.data = Path(data)
    data_path = datamanager.data if datamanager.data is not None else getattr(datamanager.dataparser, "data", None)
    if data_path is not None and not Path(data_path).exists():
        raise DataError(
            data_path,
            "training data not found (the pipeline needs its cameras and scene box); pass the folder's new location "
            "as data= (--data on the command line)",
        )

    ckpt_dir = checkpoint_dir(config, path)
    if step is not None:
        ckpt = ckpt_dir / f"step-{step:09d}.ckpt"
        if not ckpt.is_file():
            raise DataError(ckpt, "checkpoint not found")
    else:
        found = latest_checkpoint(ckpt_dir)
        if found is None:
            problem = "no step-*.ckpt checkpoint in this folder" if ckpt_dir.is_dir() else "checkpoint folder not found"
            raise DataError(ckpt_dir, f"{problem} (has the run saved a checkpoint yet?)")
        ckpt = found
    state = load_checkpoint_file(ckpt)  # (a nerfstudio checkpoint: "step" and "pipeline" weights, no code)
    config.load_dir = ckpt_dir

    pipeline = config.pipeline.setup(device=device, test_mode=test_mode)
    check_model_weights(pipeline.model, state["pipeline"], ckpt)
    try:
        pipeline.load_pipeline(state["pipeline"], state["step"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise DataError(ckpt, f"checkpoint does not match this config ({one_line(err)})") from err
    pipeline.to(device)
    pipeline.eval()
    return config, pipeline
