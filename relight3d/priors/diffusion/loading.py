"""Loading pretrained diffusion weights: local folders only, safetensors only, one-line errors naming the path.

Every diffusers / transformers component is read with ``from_pretrained(folder, subfolder=..., local_files_only=True)``
(nothing is downloaded) and, for networks, ``use_safetensors=True`` (pickled ``.bin`` weights could run code). A
missing folder, a missing component or an unreadable one is a :class:`~relight3d.errors.WeightsError`
``(path, problem)``; a model path that is not set at all is a :class:`~relight3d.errors.ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch

from relight3d.errors import ConfigError, WeightsError, reading

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Network precisions a config can name (besides ``"auto"``)."""


def resolve_torch_dtype(name: str, device: Union[str, torch.device], option: str = "dtype") -> torch.dtype:
    """``"auto"`` is float16 on CUDA and float32 elsewhere; other names map to the torch dtype of that name.

    Raises:
        ConfigError: ``name`` is not ``auto`` or a key of :data:`DTYPES` (``option`` names the setting).
    """
    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(option, f"unknown dtype {name!r} (choose one of auto, {', '.join(DTYPES)})")
    return DTYPES[name]


def require_model_dir(model_path: Optional[Union[str, Path]], option: str, subfolders: Sequence[str] = ()) -> Path:
    """The checkpoint folder ``model_path``, checked to exist and to hold ``subfolders``.

    Raises:
        ConfigError: ``model_path`` is None (``option`` names the setting to give).
        WeightsError: the folder or one of its subfolders is missing.
    """
    if model_path is None:
        raise ConfigError(option, "not set (a local checkpoint folder in the diffusers layout; nothing is downloaded)")
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise WeightsError(path, "checkpoint folder not found")
    missing = [s for s in subfolders if not (path / s).is_dir()]
    if missing:
        raise WeightsError(path, f"not a diffusers-layout checkpoint: missing {', '.join(s + '/' for s in missing)}")
    return path


def load_component(component_class: Any, model_path: Path, subfolder: str) -> Any:
    """``component_class.from_pretrained(model_path, subfolder=subfolder)`` from local files, float32 on the CPU.

    Networks (``torch.nn.Module`` classes) are read from safetensors only.

    Raises:
        WeightsError: the subfolder is missing, or the component cannot be read from it (one line, with the cause).
    """
    where = Path(model_path) / subfolder
    if not where.is_dir():
        raise WeightsError(where, f"missing (expected the {component_class.__name__} of the checkpoint)")
    kwargs: Dict[str, Any] = {"subfolder": subfolder, "local_files_only": True}
    if isinstance(component_class, type) and issubclass(component_class, torch.nn.Module):
        kwargs["use_safetensors"] = True
    with reading(where, f"a {component_class.__name__}", error=WeightsError):
        return component_class.from_pretrained(str(model_path), **kwargs)


def read_weights(path: Union[str, Path], what: str) -> Dict[str, Any]:
    """The tensors of a third-party weight file: ``.safetensors``, or a torch pickle (``.bin``, ``.pt``) read with
    ``torch.load(weights_only=True)``, which builds tensors and plain containers only and never runs code.

    Pickles are accepted here only for files whose public releases use them (RealFusion's ``learned_embeds.bin``,
    accelerate's ``pytorch_model.bin``); diffusers components are always read from safetensors.

    Raises:
        WeightsError: the file is missing or cannot be read as ``what``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(path, f"{what} not found")
    with reading(path, what, error=WeightsError):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
