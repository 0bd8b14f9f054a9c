"""DiFaReli (Ponglertnapakorn et al., ICCV 2023) as a relighting prior: DDIM inversion of a view under its source
shading reference, then DDIM decoding under the target one.

DiFaReli is a pixel-space diffusion model of faces (:mod:`relight3d.priors.difareli_unet`). Light enters it *only*
through a spatial condition, a Lambertian render of the face's geometry under DECA's 9-coefficient SH light (the
"shading reference"); the per-face codes (DECA shape / pose / expression / camera, ArcFace identity, a shadow scalar)
stay those of the input. Relighting is ``decode(invert(image, source reference), target reference)``.

Sources: DiFaReli's code, github.com/diffusion-face-relighting/difareli_code at ``2dd24a0``, and the DECA it vendors,
read and restated, not copied; cited below as [light] (``model_3d/FLAME/utils/renderer.py``,
``SRenderY.add_SHlight``), [reference] (``sample_scripts/sample_utils/params_utils.py::render_deca`` and DECA's
``decalib/utils/renderer.py::render_shape``) and [sampling] (``sample_scripts/inference/relight.py::relight``,
``guided_diffusion/gaussian_diffusion.py``). Here the geometry is the radiance field's instead of a FLAME mesh:

* **Light ([light]).** Target: :func:`~relight3d.lighting.deca_sh.deca_sh_from_envmap` of ``views.target_envmap``
  in each view's DECA frame (:func:`~relight3d.lighting.deca_sh.deca_frame_rotation`: x right, y up, z towards the
  viewer), read as reflected radiance of a white Lambertian surface (``shading="reflected"``). Source:
  the same of ``views.source_envmap`` when given; otherwise fitted per view by least squares
  (:func:`~relight3d.lighting.deca_sh.fit_deca_sh`) to the view's pixels as ``image = (180 / 255) * shading`` at the
  view's normals (only pixels inside the mask, covered by the field and facing the camera). The fit is made on the
  **sRGB** values by default (``fit_space``): DECA, which produced every light DiFaReli saw, fits its photometric
  loss to 8-bit images divided by 255 (``decalib/datasets/datasets.py``: ``imread(...)``, ``image / 255.``) without
  linearising them. The constant albedo 180 / 255 is the one the reference is rendered with ([reference]), so that the
  fitted source reference reproduces the view's brightness. A light from a map is linear radiance, so a fitted
  source and a map target live in different spaces: ``fit_space="linear"`` fits the linearised pixels instead,
  which matches the map's space when the scene is lit by a real map.
* **Shading reference ([reference]).** ``ref = (180 / 255) * deca_shading(n, light) * alpha``, unclipped (DiFaReli's
  ``deca_masked_face_images_woclip``), background 0, not mapped to [-1, 1]. ``n`` is the field's unit normal in the
  DECA frame (DECA uses its rasterised coarse normals as they are; a field's normals are normalised here, as its
  gradients have no meaningful length), ``alpha`` the field's accumulation times DiFaReli's back-face mask
  ``pos_mask`` (DECA's screen-space z flips sign, so ``transformed z < 0.15`` keeps normals with DECA-frame
  ``z > -0.15``: ``facing_threshold``). DiFaReli also restricts the render to FLAME's face region; for an object,
  the whole object takes that role.
* **Face-segmentation input ([reference]).** ``faceseg_nohead`` is the image with the head (face, neck, hair) set to
  -1: here ``(1 - mask) * (2 image - 1) - mask``, the object playing the head. The same for inversion and decoding.
* **Codes ([reference]).** ``cat([shape 100, pose 6, exp 50, cam 3, ArcFace 512, shadow 1])`` = 672 numbers, the same
  for inversion and decoding, from ``codes_path`` (:func:`read_face_codes`). DiFaReli ships no neutral codes (its
  ``avg_dict`` is averaged over the training annotations at run time, and only its camera and crop transform are
  ever used); without a file every number is 0 and one warning says so: 0 is FLAME's mean shape, neutral
  expression and frontal pose with closed jaw, but an orthographic camera of scale 0, a zero identity embedding and
  a shadow value of 0 (DiFaReli's shadow-removal edits move it towards -1) are outside the training data.
* **Image ([reference], [sampling]).** sRGB in [0, 1] -> ``2 x - 1`` (``input_bound = 1``), the whole view
  (DiFaReli sees the real background), padded to a square with black and resized to ``resolution``
  (:func:`to_square`); the result is resized back, clipped to [0, 1] and composited with the masks onto the input.
* **Sampling ([sampling]).** diffusers' ``DDIMScheduler`` on DiFaReli's linear 1000-step betas (1e-4..0.02),
  epsilon prediction, ``clip_sample=False``; ``num_inference_steps`` defaults to DiFaReli's README (1000, every
  timestep). :func:`~relight3d.priors.diffusion.inversion.ddim_invert` / ``ddim_decode`` differ from DiFaReli
  deliberately (no x0 clipping; the top of the grid is ``alphas_cumprod[999]``, not 0; optional fixed-point
  inversion); DiFaReli's "mean matching" brightness correction is not reproduced. These defaults *are* DiFaReli's
  released sampling as far as relight3d's DDIM can follow it, so there is no separate public preset.

``refine`` (stage 2) is SDEdit under the target conditions: the render is noised to ``t_star`` of the schedule with
each view's noise stream and decoded by DDIM (:func:`~relight3d.priors.diffusion.sampling.sample_latents`).
Deterministic inversion would be no use there: inverting and decoding under the same (target) conditions gives the
render back. ``t_star = 0`` returns the images; ``t_star >= 1`` starts from (almost) pure noise, which for DiFaReli
is a new face-like image rather than the relit view: keep ``t_star`` small.

Checkpoints: ``model_path`` holds DiFaReli's released ``ImgCond_ema_<rate>_<step>.pt`` (UNet) and
``ImgEncoder_ema_<rate>_<step>.pt`` (condition encoder), the highest step with both
(:func:`~relight3d.priors.difareli_unet.find_difareli_checkpoints`), read with ``weights_only=True``. The released
files carry no architecture; an optional relight3d ``difareli_settings.json`` beside them lists
:class:`~relight3d.priors.difareli_unet.DiFaReliUNetSettings` values that differ from the released 256 px model's
(:func:`tiny_difareli_folder` writes one for its tiny random model).

Example:
    >>> config = DiFaReliPriorConfig(model_path=Path("weights/difareli_256"), codes_path=Path("face_codes.npz"))
    >>> relit = config.setup("cuda").relight(views)  # views.gbuffers: "normals", "accumulation"  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn

from relight3d.errors import ConfigError, reading
from relight3d.lighting.deca_sh import deca_frame_rotation, deca_sh_from_sh, deca_shading, fit_deca_sh, rotate_sh_order2
from relight3d.lighting.encodings import srgb_to_linear
from relight3d.lighting.spherical_harmonics import project_sh
from relight3d.priors.base import (
    PriorError,
    PriorViews,
    RelightingPrior,
    RelightingPriorConfig,
    from_square,
    make_generators,
    per_view_noise,
    to_square,
)
from relight3d.priors.difareli_unet import (
    DiFaReliConditionEncoder,
    DiFaReliUNet,
    DiFaReliUNetSettings,
    difareli_eps,
    find_difareli_checkpoints,
    load_difareli_checkpoint,
)
from relight3d.priors.diffusion.inversion import ddim_decode, ddim_invert

CODE_PARTS: Tuple[Tuple[str, int], ...] = (
    ("shape", 100),
    ("pose", 6),
    ("exp", 50),
    ("cam", 3),
    ("arcface", 512),
    ("shadow", 1),
)
"""The named parts of DiFaReli's code vector, in its order (``params_selector`` of ``difareli_256.yaml``)."""
CODE_DIM = sum(size for _, size in CODE_PARTS)
"""Length of the code vector (672)."""
CODE_ALIASES = {"faceemb": "arcface"}
"""Other accepted names of code parts (DiFaReli calls the ArcFace embedding ``faceemb``)."""
REFERENCE_ALBEDO = 180.0 / 255.0
"""The constant grey albedo of DiFaReli's shading reference (DECA renderer's ``face_colors``)."""
SETTINGS_FILE = "difareli_settings.json"
"""relight3d's optional file of non-default :class:`DiFaReliUNetSettings` values in a checkpoint folder."""
CODE_SUFFIXES = (".npz", ".json", ".safetensors")
"""Formats of a codes file (none of them can hold code)."""

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Network precisions a config can name."""

TINY_SETTINGS = DiFaReliUNetSettings(
    image_size=32,
    model_channels=8,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    attention_resolutions=(8,),
    num_heads=2,
    condition_dim=CODE_DIM,
    condition_proj_dim=16,
    norm_groups=4,
)
"""The architecture of :func:`tiny_difareli_folder`: 32 px, every kind of block, the real 672-number codes."""


@dataclass
class DiFaReliPriorConfig(RelightingPriorConfig):
    """DiFaReli: DDIM inversion under the source shading reference, decoding under the target's (module doc)."""

    _target: Type = field(default_factory=lambda: DiFaReliPrior)
    """Prior class to instantiate."""
    model_path: Optional[Path] = None
    """Folder with DiFaReli's released ImgCond_ema_<rate>_<step>.pt and ImgEncoder_ema_<rate>_<step>.pt (the highest
    step with both is used), and optionally relight3d's difareli_settings.json of non-default architecture values
    (written by tiny_difareli_folder); without it, the released 256 px architecture."""
    codes_path: Optional[Path] = None
    """Face codes as DECA / ArcFace produce them (.npz, .json or .safetensors with arrays shape 100, pose 6, exp 50,
    cam 3, arcface (or faceemb) 512, shadow 1; each [size] for all views or [views, size] per view, by position in
    each call); None: all zeros (DiFaReli ships no neutral codes; one warning)."""
    resolution: Optional[int] = None
    """Square side the model works at; None: the model's image size (256 released, from difareli_settings.json for
    other models)."""
    num_inference_steps: int = 1000
    """DDIM steps of inversion and of decoding (DiFaReli's README: 1000, every training timestep)."""
    fixed_point_iterations: int = 0
    """Extra UNet calls per inversion step that make invert-then-decode exact (0: classic DDIM inversion, as DiFaReli;
    its error shrinks like 1 / num_inference_steps)."""
    fit_space: Literal["srgb", "linear"] = "srgb"
    """Without a source map, the source light is fitted to the view's pixels in this space: srgb as DECA fits faces
    (8-bit images / 255), or linear (matches lights taken from linear maps)."""
    facing_threshold: float = -0.15
    """Pixels whose normal has DECA-frame z (towards the viewer) at or below this are left out of the shading
    reference and the fit (DiFaReli's pos_mask: transformed normal z < 0.15 in DECA's flipped screen space)."""
    dtype: Literal["float32", "float64", "float16", "bfloat16"] = "float32"
    """Network precision (DiFaReli samples in float32; inversion in half precision is not exact)."""
    max_batch_size: int = 4
    """Most views per UNet call (larger batches are processed in parts)."""


# --- files ---------------------------------------------------------------------------------------------------------
def read_settings(folder: Union[str, Path]) -> DiFaReliUNetSettings:
    """The architecture of the checkpoints in ``folder``: the released one, overridden by ``difareli_settings.json``.

    Raises:
        PriorError: the settings file is unreadable, names an unknown field or gives a value of the wrong type.
    """
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return DiFaReliUNetSettings()
    with reading(path, "JSON", error=PriorError):
        document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise PriorError(path, f"holds a JSON {type(document).__name__}, not an object of settings")
    defaults = {f.name: getattr(DiFaReliUNetSettings(), f.name) for f in dataclasses.fields(DiFaReliUNetSettings)}
    values: Dict[str, Any] = {}
    for key, value in document.items():
        if key not in defaults:
            raise PriorError(path, f"unknown setting {key!r} (known: {', '.join(defaults)})")
        default = defaults[key]
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise PriorError(path, f"{key}: expected a list of integers, got {value!r}")
            value = tuple(value)
        elif isinstance(default, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise PriorError(path, f"{key}: expected a number, got {value!r}")
            value = float(value)
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PriorError(path, f"{key}: expected a positive integer, got {value!r}")
        values[key] = value
    return DiFaReliUNetSettings(**values)


def load_difareli_models(
    folder: Union[str, Path], device: Union[str, torch.device] = "cpu"
) -> Tuple[DiFaReliUNet, DiFaReliConditionEncoder]:
    """DiFaReli's UNet and condition encoder from a checkpoint folder (see :attr:`DiFaReliPriorConfig.model_path`),
    in float32 on ``device``, in eval mode.

    Raises:
        PriorError: one line naming the folder or file: no folder, no pair of checkpoints, a settings file or a
            checkpoint that does not fit (e.g. a tensor of another shape).
    """
    folder = Path(folder)
    unet_path, encoder_path = find_difareli_checkpoints(folder)
    settings = read_settings(folder)
    models: List[nn.Module] = []
    for builder, path in ((DiFaReliUNet, unet_path), (DiFaReliConditionEncoder, encoder_path)):
        with torch.device("meta"):
            model = builder(settings)
        state = load_difareli_checkpoint(path, expected=model)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
        models.append(model.to(device).eval())
    return models[0], models[1]  # type: ignore[return-value]


def _code_arrays(path: Path) -> Dict[str, Any]:
    """The named arrays of a codes file, as float64 tensors (no pickles: numpy without allow_pickle, JSON,
    safetensors)."""
    suffix = path.suffix.lower()
    if suffix not in CODE_SUFFIXES:
        raise PriorError(path, f"unknown face-codes format {path.suffix!r} (use {', '.join(CODE_SUFFIXES)})")
    with reading(path, f"face codes ({suffix})", error=PriorError):
        if suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as data:
                return {k: torch.as_tensor(np.asarray(data[k], dtype=np.float64)) for k in data.files}
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return {k: v.to(torch.float64) for k, v in load_file(str(path)).items()}
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise PriorError(path, f"holds a JSON {type(document).__name__}, not an object of named arrays")
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in document.items()}


def read_face_codes(path: Union[str, Path]) -> Float[Tensor, "n 672"]:
    """DiFaReli's 672-number codes from a file of named arrays (``shape``, ``pose``, ``exp``, ``cam``, ``arcface``
    or ``faceemb``, ``shadow``; sizes :data:`CODE_PARTS`), float64, one row per view (or one row for all views).

    Each array is ``[size]`` or ``[n, size]`` with the same ``n`` for all; a part the file lacks is 0 (one warning
    names the missing parts).

    Raises:
        PriorError: one line naming the file: missing, unreadable, an unknown name, a wrong size, differing numbers
            of rows, or non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise PriorError(path, "no such face-codes file")
    arrays = {CODE_ALIASES.get(k, k): v for k, v in _code_arrays(path).items()}
    sizes = dict(CODE_PARTS)
    unknown = [k for k in arrays if k not in sizes]
    if unknown:
        raise PriorError(path, f"unknown code {unknown[0]!r} (known: {', '.join(sizes)}, faceemb)")
    rows = set()
    for name, array in arrays.items():
        if array.dim() not in (1, 2) or array.shape[-1] != sizes[name]:
            raise PriorError(
                path, f"{name}: expected [{sizes[name]}] or [views, {sizes[name]}], got {list(array.shape)}"
            )
        if not torch.isfinite(array).all():
            raise PriorError(path, f"{name}: holds NaN or infinite values")
        rows.add(1 if array.dim() == 1 else int(array.shape[0]))
    if len(rows - {1}) > 1:
        raise PriorError(path, f"the arrays have different numbers of views: {sorted(rows)}")
    count = max(rows) if rows else 1
    missing = [name for name, _ in CODE_PARTS if name not in arrays]
    if missing:
        warnings.warn(f"{path}: no {', '.join(missing)} codes; using 0 for them", UserWarning, stacklevel=2)
    parts = [
        arrays[name].reshape(-1, size).expand(count, size) if name in arrays else torch.zeros(count, size)
        for name, size in CODE_PARTS
    ]
    return torch.cat([p.to(torch.float64) for p in parts], dim=-1)


def difareli_scheduler() -> Any:
    """diffusers' ``DDIMScheduler`` on DiFaReli's noise schedule: 1000 steps, linear betas 1e-4..0.02, epsilon
    prediction, no sample clipping ([sampling])."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
    )


def _randomise(model: nn.Module, generator: torch.Generator, std: float) -> nn.Module:
    """Every parameter random (GroupNorm gains around 1): DiFaReli zero-initialises the last layer of every branch,
    which would make a fresh model's noise prediction identically zero."""
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype) * std
                gain = isinstance(module, nn.GroupNorm) and name == "weight"
                p.copy_(noise + (1.0 if gain else 0.0))
    return model


def tiny_difareli_folder(path: Union[str, Path], seed: int = 0) -> Path:
    """Write a tiny random DiFaReli model (:data:`TINY_SETTINGS`: 32 px, 672-number codes) under the released file
    names (``ImgCond_ema_0.9999_000001.pt``, ``ImgEncoder_ema_0.9999_000001.pt``) with its ``difareli_settings.json``,
    for tests and end-to-end runs on the CPU; the same ``seed`` gives the same weights. Its noise prediction is
    random, not a denoiser: relighting with it exercises the machinery, not the result. Every parameter is drawn
    with std 0.15 (GroupNorm gains around 1) and the output convolution is then scaled by 0.1, which makes the
    prediction's gain in ``x_t`` about 0.1 (about 0.9 without the scaling): fixed-point inversion, which converges
    when that gain times the step's noise increment is below 1, then converges quickly.

    Example:
        >>> folder = tiny_difareli_folder(tmp_path / "difareli")  # doctest: +SKIP
        >>> prior = DiFaReliPriorConfig(model_path=folder, num_inference_steps=5).setup()  # doctest: +SKIP
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    unet = _randomise(DiFaReliUNet(TINY_SETTINGS), generator, 0.15)
    encoder = _randomise(DiFaReliConditionEncoder(TINY_SETTINGS), generator, 0.15)
    with torch.no_grad():  # a 10x smaller output layer: eps(x_t) then varies ~0.1x as fast as x_t (see below)
        unet.out[2].weight.mul_(0.1)
        unet.out[2].bias.mul_(0.1)
    torch.save(unet.state_dict(), folder / "ImgCond_ema_0.9999_000001.pt")
    torch.save(encoder.state_dict(), folder / "ImgEncoder_ema_0.9999_000001.pt")
    released = DiFaReliUNetSettings()
    changed = {
        f.name: getattr(TINY_SETTINGS, f.name)
        for f in dataclasses.fields(DiFaReliUNetSettings)
        if getattr(TINY_SETTINGS, f.name) != getattr(released, f.name)
    }
    changed = {k: list(v) if isinstance(v, tuple) else v for k, v in changed.items()}
    (folder / SETTINGS_FILE).write_text(json.dumps(changed, indent=1) + "\n", encoding="utf-8")
    return folder


# --- the prior -----------------------------------------------------------------------------------------------------
@dataclass
class DiFaReliGeometry:
    """What a batch of views shows DiFaReli about its geometry, at the views' size."""

    normals: Float[Tensor, "b h w 3"]
    """Unit normals in each view's DECA frame (x right, y up, z towards the viewer), float64."""
    alpha: Float[Tensor, "b h w 1"]
    """Where the shading reference is drawn: accumulation times the facing mask, float64."""
    fit_mask: Bool[Tensor, "b h w"]
    """Pixels a source light is fitted to: inside the view mask, covered and facing (bool)."""


class DiFaReliPrior(RelightingPrior):
    """DiFaReli's relighting by DDIM inversion and decoding (see the module doc)."""

    config: DiFaReliPriorConfig
    required_gbuffers = ("normals", "accumulation")

    def __init__(
        self,
        config: DiFaReliPriorConfig,
        device: Union[str, torch.device] = "cpu",
        unet: Optional[DiFaReliUNet] = None,
        encoder: Optional[DiFaReliConditionEncoder] = None,
    ) -> None:
        super().__init__(config, device)
        name = type(config).__name__
        if config.dtype not in DTYPES:
            raise ConfigError(f"{name}.dtype", f"unknown dtype {config.dtype!r} (choose one of {', '.join(DTYPES)})")
        if config.num_inference_steps < 1:
            raise ConfigError(f"{name}.num_inference_steps", f"{config.num_inference_steps} is not positive")
        if config.fixed_point_iterations < 0:
            raise ConfigError(f"{name}.fixed_point_iterations", f"{config.fixed_point_iterations} is negative")
        if config.max_batch_size < 1:
            raise ConfigError(f"{name}.max_batch_size", f"{config.max_batch_size} is not positive")
        if config.fit_space not in ("srgb", "linear"):
            raise ConfigError(f"{name}.fit_space", f"unknown space {config.fit_space!r} (srgb or linear)")
        if (unet is None) != (encoder is None):
            raise ConfigError(name, "pass both the UNet and the condition encoder, or neither")
        if unet is None:
            if config.model_path is None:
                raise ConfigError(f"{name}.model_path", "not set (a folder of DiFaReli's ImgCond / ImgEncoder files)")
            unet, encoder = load_difareli_models(config.model_path)
        assert encoder is not None
        if unet.settings != encoder.settings:
            raise ConfigError(name, "the UNet and the condition encoder were built with different settings")
        if unet.settings.condition_dim != CODE_DIM:
            raise ConfigError(name, f"the UNet takes {unet.settings.condition_dim} code numbers, not {CODE_DIM}")
        self.dtype = DTYPES[config.dtype]
        self.unet = unet.to(self._device, self.dtype).eval().requires_grad_(False)
        self.encoder = encoder.to(self._device, self.dtype).eval().requires_grad_(False)
        self.settings = unet.settings
        self.scheduler = difareli_scheduler()
        self._resolution = self._checked_resolution()
        if config.codes_path is not None:
            self._codes: Optional[Tensor] = read_face_codes(config.codes_path)
        else:
            self._codes = None
            warnings.warn(
                f"{name}.codes_path: not set; DiFaReli is conditioned on all-zero face codes (FLAME's mean face, "
                "but a zero camera scale, identity and shadow value, which its training never saw)",
                UserWarning,
                stacklevel=3,
            )

    @classmethod
    def from_components(
        cls,
        config: Optional[DiFaReliPriorConfig] = None,
        unet: Optional[DiFaReliUNet] = None,
        encoder: Optional[DiFaReliConditionEncoder] = None,
        device: Union[str, torch.device] = "cpu",
    ) -> "DiFaReliPrior":
        """The prior on given networks instead of ``config.model_path`` (tests pass tiny random ones); they are
        moved to ``device`` and ``config.dtype``.

        Example:
            >>> config = DiFaReliPriorConfig(dtype="float64")  # doctest: +SKIP
            >>> prior = DiFaReliPrior.from_components(config, unet, encoder)  # doctest: +SKIP
        """
        if unet is None or encoder is None:
            raise ConfigError(cls.__name__, "from_components needs both the UNet and the condition encoder")
        return cls(config if config is not None else DiFaReliPriorConfig(), device, unet=unet, encoder=encoder)

    def _checked_resolution(self) -> int:
        resolution = self.config.resolution or self.settings.image_size
        factor = 2 ** (len(self.settings.channel_mult) - 1)
        if resolution < factor or resolution % factor:
            raise ConfigError(
                f"{type(self.config).__name__}.resolution",
                f"{resolution} is not a positive multiple of {factor} (the UNet downsamples {factor}x)",
            )
        return resolution

    @property
    def resolution(self) -> Optional[int]:
        return self._resolution

    @property
    def state_dtype(self) -> torch.dtype:
        """The dtype of the diffusion state: float64 with a float64 model, else float32."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    # --- conditions ------------------------------------------------------------------------------------------------
    def codes(self, batch_size: int) -> Float[Tensor, "b 672"]:
        """The code vector of each view of a call (float64, on the CPU): the file's single row for all views, or its
        rows by position; zeros without a file.

        Raises:
            PriorError: the file has per-view rows, but not as many as the call has views.
        """
        if self._codes is None:
            return torch.zeros(batch_size, CODE_DIM, dtype=torch.float64)
        rows = int(self._codes.shape[0])
        if rows == 1:
            return self._codes.expand(batch_size, CODE_DIM)
        if rows != batch_size:
            raise PriorError(
                self.config.codes_path or self.error_path,
                f"has codes for {rows} views, the call has {batch_size} (give one row for all or one per view)",
            )
        return self._codes

    def geometry(self, views: PriorViews) -> DiFaReliGeometry:
        """The views' normals in DECA's frame and the reference's and fit's masks (see the module doc).

        Raises:
            PriorError: the ``normals`` or ``accumulation`` G-buffer is missing, of the wrong shape or not finite.
        """
        b, h, w, _ = views.images.shape
        gbuffers = views.gbuffers or {}
        where = self.error_path
        for name in self.required_gbuffers:
            if name not in gbuffers:
                raise PriorError(where, f"DiFaReli needs the {name!r} G-buffer (PriorViews.gbuffers)")
        normals, accumulation = gbuffers["normals"], gbuffers["accumulation"]
        if normals.shape != (b, h, w, 3):
            raise PriorError(where, f"normals G-buffer must be [{b}, {h}, {w}, 3], got {tuple(normals.shape)}")
        if accumulation.dim() == 3:
            accumulation = accumulation[..., None]
        if accumulation.shape != (b, h, w, 1):
            raise PriorError(
                where, f"accumulation G-buffer must be [{b}, {h}, {w}, 1], got {tuple(accumulation.shape)}"
            )
        if not (torch.isfinite(normals).all() and torch.isfinite(accumulation).all()):
            raise PriorError(where, "the normals or accumulation G-buffer holds NaN or infinite values")
        world = F.normalize(normals.detach().to("cpu", torch.float64), dim=-1, eps=1e-12)
        to_deca = torch.stack([deca_frame_rotation(c.detach().cpu()).to(torch.float64) for c in views.cameras])
        deca = torch.einsum("bij,bhwj->bhwi", to_deca, world)
        facing = (deca[..., 2:] > self.config.facing_threshold).to(torch.float64)
        alpha = accumulation.detach().to("cpu", torch.float64).clamp(0.0, 1.0) * facing
        fit_mask = (alpha[..., 0] > 0.5) & (views.masks.detach().cpu()[..., 0] > 0.5)
        return DiFaReliGeometry(normals=deca, alpha=alpha, fit_mask=fit_mask)

    def envmap_lights(self, envmap: Float[Tensor, "H W 3"], cameras: Float[Tensor, "b 3 4"]) -> Float[Tensor, "b 9 3"]:
        """DECA's light of ``envmap`` in each camera's DECA frame (float64): ``deca_sh_from_envmap(envmap,
        deca_frame_rotation(camera))`` per view, with the map projected once."""
        coeffs = project_sh(envmap.detach().to("cpu", torch.float64), order=2)
        lights = [
            deca_sh_from_sh(rotate_sh_order2(coeffs, deca_frame_rotation(c.detach().cpu()).to(torch.float64)))
            for c in cameras
        ]
        return torch.stack(lights)

    def fitted_lights(self, views: PriorViews, geometry: Optional[DiFaReliGeometry] = None) -> Float[Tensor, "b 9 3"]:
        """DECA's light of each view fitted to its pixels as ``image = (180 / 255) * shading`` (module doc; in
        ``fit_space``), float64.

        Raises:
            PriorError: a view has fewer than 9 pixels to fit to.
        """
        geometry = geometry if geometry is not None else self.geometry(views)
        observed = views.images.detach().to("cpu", torch.float64)
        if self.config.fit_space == "linear":
            observed = srgb_to_linear(observed.clamp(0.0, 1.0))
        albedo = torch.full_like(observed[0], REFERENCE_ALBEDO)
        lights = []
        for i in range(observed.shape[0]):
            try:
                fit = fit_deca_sh(geometry.normals[i], observed[i], geometry.fit_mask[i], albedo)
            except ValueError as err:
                raise PriorError(self.error_path, f"view {i}: cannot fit its source light: {err}") from err
            lights.append(fit.coeffs)
        return torch.stack(lights)

    def lights(self, views: PriorViews) -> Tuple[Float[Tensor, "b 9 3"], Float[Tensor, "b 9 3"]]:
        """``(source, target)`` DECA lights of each view (float64): the target from ``views.target_envmap``, the
        source from ``views.source_envmap`` when given, else fitted to the images."""
        target = self.envmap_lights(views.target_envmap, views.cameras)
        if views.source_envmap is not None:
            return self.envmap_lights(views.source_envmap, views.cameras), target
        return self.fitted_lights(views), target

    def shading_references(
        self, geometry: DiFaReliGeometry, lights: Float[Tensor, "b 9 3"]
    ) -> Float[Tensor, "b h w 3"]:
        """DiFaReli's shading reference of each view at its size: ``(180 / 255) * deca_shading(n, light) * alpha``,
        unclipped, 0 outside (float64)."""
        shading = torch.stack(
            [deca_shading(n, light.to(torch.float64)) for n, light in zip(geometry.normals, lights.cpu())]
        )
        return REFERENCE_ALBEDO * shading * geometry.alpha

    def _square(self, x: Tensor, fill: float) -> Tensor:
        return to_square(x.to(self._device, self.state_dtype), self._resolution, fill)[0]

    def _faceseg(self, views: PriorViews) -> Float[Tensor, "b 3 r r"]:
        """``faceseg_nohead``: the image in [-1, 1] with the object ("head") at -1, squared (padding -1)."""
        images = views.images.detach().to(self._device, self.state_dtype)
        masks = views.masks.detach().to(self._device, self.state_dtype).clamp(0.0, 1.0)
        return self._square((1.0 - masks) * (2.0 * images - 1.0) - masks, -1.0)

    def _condition(self, reference: Tensor, faceseg: Tensor) -> Tensor:
        return torch.cat([self._square(reference, 0.0), faceseg], dim=1)

    # --- the contract ----------------------------------------------------------------------------------------------
    def relight_views(self, views: PriorViews) -> Float[Tensor, "b h w 3"]:
        """Invert each view under its source light's reference and decode it under the target light's (needs the
        ``normals`` and ``accumulation`` G-buffers; ``views.source_envmap`` is optional)."""
        source, target = self.lights(views)
        return self.relight_with_lights(views, source, target)

    def relight_with_lights(
        self, views: PriorViews, source: Float[Tensor, "b 9 3"], target: Float[Tensor, "b 9 3"]
    ) -> Float[Tensor, "b h w 3"]:
        """:meth:`relight_views` with the DECA lights given (``[b, 9, 3]``, in each view's DECA frame); the views
        are checked as :meth:`relight` checks them."""
        views = self.checked(views)
        b = views.batch_size
        for name, light in (("source", source), ("target", target)):
            if light.shape != (b, 9, 3):
                raise PriorError(self.error_path, f"{name} lights must be [{b}, 9, 3], got {tuple(light.shape)}")
        geometry = self.geometry(views)
        references = (self.shading_references(geometry, source), self.shading_references(geometry, target))
        codes = self.codes(b)
        steps, iterations = self.config.num_inference_steps, self.config.fixed_point_iterations
        outputs = []
        with torch.no_grad():
            for part, x0, layout, faceseg in self._parts(views):
                eps_source = difareli_eps(
                    self.unet, self.encoder, codes[part], self._condition(references[0][part], faceseg)
                )
                eps_target = difareli_eps(
                    self.unet, self.encoder, codes[part], self._condition(references[1][part], faceseg)
                )
                x_T = ddim_invert(2.0 * x0 - 1.0, eps_source, self.scheduler, steps, iterations)
                decoded = ddim_decode(x_T, eps_target, self.scheduler, steps)
                outputs.append(from_square((decoded + 1.0) / 2.0, layout))
        return self._composited(views, torch.cat(outputs))

    def refine_views(self, views: PriorViews, t_star: float) -> Float[Tensor, "b h w 3"]:
        """SDEdit under the target conditions (module doc): noise to ``t_star`` with each view's stream of
        ``views.generator``, decode by DDIM; ``t_star <= 0`` returns the images."""
        from relight3d.priors.diffusion.sampling import sample_latents

        if t_star <= 0.0:
            return views.images.detach().float().clone()
        b = views.batch_size
        geometry = self.geometry(views)
        references = self.shading_references(geometry, self.envmap_lights(views.target_envmap, views.cameras))
        codes = self.codes(b)
        generators = make_generators(views.generator, b, self.config.seed)
        outputs = []
        with torch.no_grad():
            for part, x0, layout, faceseg in self._parts(views):
                eps = difareli_eps(self.unet, self.encoder, codes[part], self._condition(references[part], faceseg))
                noise = per_view_noise(generators[part], tuple(x0.shape[1:]), self._device).to(self.state_dtype)
                refined = sample_latents(
                    self.scheduler,
                    eps,
                    noise,
                    self.config.num_inference_steps,
                    start=2.0 * x0 - 1.0,
                    strength=min(t_star, 1.0),
                )
                outputs.append(from_square((refined + 1.0) / 2.0, layout))
        return self._composited(views, torch.cat(outputs))

    def _parts(self, views: PriorViews) -> Iterator[Tuple[slice, Tensor, Any, Tensor]]:
        """Per batch part of at most ``max_batch_size`` views: its slice, its images squared to the model's side,
        their layout (for :func:`from_square`) and their ``faceseg_nohead``."""
        for start in range(0, views.batch_size, self.config.max_batch_size):
            part = slice(start, start + self.config.max_batch_size)
            chunk = _views_part(views, part)
            x0, layout = to_square(chunk.images.detach().to(self._device, self.state_dtype), self._resolution, 0.0)
            yield part, x0, layout, self._faceseg(chunk)

    def _composited(self, views: PriorViews, relit: Tensor) -> Float[Tensor, "b h w 3"]:
        """The relit views clipped to [0, 1] inside the masks, the input outside, float32 on the images' device."""
        images = views.images.detach().float()
        masks = views.masks.detach().float().clamp(0.0, 1.0)
        relit = relit.clamp(0.0, 1.0).to(images.device, torch.float32)
        return masks * relit + (1.0 - masks) * images


def _views_part(views: PriorViews, part: slice) -> PriorViews:
    """The views of one batch part (the images and masks; lights and geometry are computed for the whole call)."""
    return dataclasses.replace(views, images=views.images[part], masks=views.masks[part], cameras=views.cameras[part])
