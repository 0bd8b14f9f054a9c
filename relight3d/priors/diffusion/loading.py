"""Loading pretrained diffusion weights: local folders only, safetensors only, one-line errors naming the path.

Every diffusers / transformers component is read with ``from_pretrained(folder, subfolder=..., local_files_only=True)``
(nothing is downloaded) and, for networks, ``use_safetensors=True`` (pickled ``.bin`` weights could run code). A
missing folder, component or file, a tensor whose shape differs from what the component's ``config.json`` builds
(``unet: conv_in expects 8 input channels (config.json), diffusion_pytorch_model.safetensors has 4``), a tensor the
weights lack, or an unreadable component is a :class:`~relight3d.errors.WeightsError` ``(path, problem)`` of one
line; a model path that is not set at all is a :class:`~relight3d.errors.ConfigError`.

Precision: :func:`resolve_torch_dtype` picks the networks' dtype, :func:`resolve_vae_dtype` the VAE's (diffusers'
``force_upcast`` rule by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

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


VaeDtypeName = Literal["auto", "same", "float32", "float16", "bfloat16"]
"""VAE precisions a config can name (see :func:`resolve_vae_dtype`)."""


def resolve_vae_dtype(name: str, dtype: torch.dtype, force_upcast: bool, option: str = "vae_dtype") -> torch.dtype:
    """The VAE's dtype when the other networks run in ``dtype``.

    ``"auto"`` is diffusers' rule (its SDXL pipelines' ``upcast_vae``): float32 when ``dtype`` is float16 and the
    VAE's config sets ``force_upcast`` (diffusers' default, true for the SD 1.x / 2.x / SDXL VAEs: their activations
    can overflow float16), else ``dtype`` (bfloat16 has float32's range). ``"same"`` is ``dtype`` (what diffusers'
    Stable Diffusion 1.x, img2img and InstructPix2Pix pipelines do: they never upcast). Other names are that dtype.

    Raises:
        ConfigError: an unknown name (``option`` names the setting).
    """
    if name == "auto":
        return torch.float32 if dtype == torch.float16 and force_upcast else dtype
    if name == "same":
        return dtype
    if name not in DTYPES:
        raise ConfigError(option, f"unknown dtype {name!r} (choose one of auto, same, {', '.join(DTYPES)})")
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

    Networks (``torch.nn.Module`` classes) are read from safetensors only, and must hold every tensor of the model
    their ``config.json`` builds, each of the shape it builds (diffusers and transformers would only warn and leave
    random weights).

    Raises:
        WeightsError: the subfolder or one of its files is missing, a tensor is missing or of the wrong shape, or the
            component cannot be read (one line, with the cause).
    """
    where = Path(model_path) / subfolder
    if not where.is_dir():
        raise WeightsError(where, f"missing (expected the {component_class.__name__} of the checkpoint)")
    is_network = isinstance(component_class, type) and issubclass(component_class, torch.nn.Module)
    problem = missing_file(where, _weights_stem(component_class) if is_network else None)
    if problem:
        raise WeightsError(where, problem)
    kwargs: Dict[str, Any] = {"subfolder": subfolder, "local_files_only": True}
    if is_network:
        kwargs.update(use_safetensors=True, ignore_mismatched_sizes=True, output_loading_info=True)
    with reading(where, f"a {component_class.__name__}", error=WeightsError):
        loaded = component_class.from_pretrained(str(model_path), **kwargs)
    if not is_network:
        return loaded
    model, info = loaded
    problem = _loading_problem(info, f"{_weights_stem(component_class)}.safetensors")
    if problem:
        raise WeightsError(where, problem)
    return model


def _weights_stem(component_class: Any) -> str:
    """The weight file name (without ``.safetensors``) of a diffusers or transformers network class."""
    return "diffusion_pytorch_model" if component_class.__module__.startswith("diffusers") else "model"


def missing_file(where: Path, weights_stem: Optional[str]) -> Optional[str]:
    """What a component folder lacks ("missing config.json", ...), or None: a network's ``config.json`` and
    ``<weights_stem>.safetensors`` (or its shard index); a tokenizer's (``weights_stem`` None) ``tokenizer.json``
    or ``vocab.json`` + ``merges.txt``."""
    if weights_stem is None:
        needed: List[Tuple[str, ...]] = [("tokenizer.json", "vocab.json")]
        if not (where / "tokenizer.json").is_file():
            needed.append(("merges.txt",))
    else:
        needed = [("config.json",), (f"{weights_stem}.safetensors", f"{weights_stem}.safetensors.index.json")]
    for names in needed:
        if not any((where / name).is_file() for name in names):
            problem = f"missing {' or '.join(names)}"
            if weights_stem is not None and (where / f"{weights_stem}.bin").is_file():
                problem += f" ({weights_stem}.bin is not read: pickled weights can run code; convert it to safetensors)"
            return problem
    return None


def _loading_problem(info: Dict[str, Any], weights: str) -> Optional[str]:
    """The first shape mismatch or missing tensor in a ``from_pretrained(output_loading_info=True)`` report."""
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: m[0])
    if mismatched:
        key, found, expected = mismatched[0]
        if key.endswith("conv_in.weight") and len(found) == len(expected) == 4:
            return f"conv_in expects {expected[1]} input channels (config.json), {weights} has {found[1]}"
        return f"{key} has shape {tuple(found)} in {weights}, config.json expects {tuple(expected)}"
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        return f"{weights} lacks {len(missing)} tensor(s) of the model config.json describes (first: {missing[0]})"
    return None


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
