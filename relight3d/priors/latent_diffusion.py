"""What the latent-diffusion relighting priors (Neural Gaffer, InstructPix2Pix, IC-Light) do identically.

A prior here is a :class:`~relight3d.priors.diffusion.components.DiffusionComponents` model sampled with the shared
loops of :mod:`relight3d.priors.diffusion`. Each prior file only says which components it has, how it builds its
conditioning for a batch of views (:meth:`LatentDiffusionPrior.condition`) and what its guidance branches are
(:meth:`LatentDiffusionPrior.predict_noise`); this module does the rest:

* **Views in and out.** Views are composited on the prior's background colour, padded to a centred square and
  resized (antialiased bilinear) to ``resolution``; results are resized back, cropped, and composited onto the input
  images with the masks (pixels outside the object keep their input values).
* **Sampling.** The config's ``scheduler`` (DDIM by default, ``clip_sample`` off, as Neural Gaffer and IC-Light run
  it; or ``"checkpoint"``, the scheduler the checkpoint's ``scheduler/`` folder names) on the model's own noise
  schedule. ``relight`` starts from pure noise (or from a prior-specific initial latent, e.g. IC-Light's lighting
  preview).
* **refine = SDEdit.** ``t_star`` is the share of the ``num_inference_steps`` steps that are re-run, with
  diffusers' img2img rule (:mod:`relight3d.priors.diffusion.sampling`). ``t* = 0`` returns the VAE round trip of
  the image, ``t* >= 1`` samples from pure noise (exactly :meth:`relight`). Neural Gaffer's public stage-2 code
  calls the same quantity ``1 - strength``.
* **Randomness.** One CPU generator per view (:func:`relight3d.priors.base.make_generators`): a view's noise does
  not depend on the batch it is in, the device, or how a batch is split.
* **Several GPUs.** With ``devices`` in the config, or when set up on ``"cuda"`` with several CUDA devices visible,
  the prior keeps one copy of its networks per device and splits each batch into contiguous parts run in parallel
  threads (plain data parallelism in one process: neither ``accelerate`` nor ``torchrun``). Tested here with two CPU
  "devices": equal results to one device are tested, a real speed-up is not.
* **Precision.** ``dtype`` (float16 on CUDA by default) for the UNet and encoders, ``vae_dtype`` for the VAE
  (by default float32 beside float16 networks, diffusers' ``force_upcast`` rule); latents, noise, guidance and the
  scheduler's arithmetic stay float32, cast at each network's boundary.
* **Score distillation.** :meth:`LatentDiffusionPrior.sds_views` (on the first device), the DreamFusion loss in the
  form used by Neural Gaffer's ``train_step`` (:func:`relight3d.priors.diffusion.guidance.score_distillation`).

diffusers and transformers are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple, Type, Union

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import ConfigError
from relight3d.priors.base import (
    PriorViews,
    RelightingPrior,
    RelightingPriorConfig,
    composite,
    from_square,
    make_generators,
    per_view_noise,
    to_square,
)
from relight3d.priors.diffusion.components import CHECKPOINT_SCHEDULER, DiffusionComponents, SamplerName
from relight3d.priors.diffusion.guidance import epsilon_from, score_distillation
from relight3d.priors.diffusion.loading import VaeDtypeName, resolve_torch_dtype, resolve_vae_dtype
from relight3d.priors.diffusion.sampling import sample_latents
from relight3d.priors.diffusion.schedulers import timestep_range


@dataclass
class LatentDiffusionPriorConfig(RelightingPriorConfig):
    """Settings shared by the latent-diffusion priors (each prior's config sets its own defaults)."""

    _target: Type = field(default_factory=lambda: LatentDiffusionPrior)
    """Prior class to instantiate."""
    model_path: Optional[Path] = None
    """Local checkpoint folder in the diffusers layout (one subfolder per component). Nothing is downloaded."""
    resolution: Optional[int] = None
    """Side of the square the model works at; None: its native size (UNet sample size x VAE downsampling)."""
    num_inference_steps: int = 50
    """Sampler steps of a full sampling run."""
    guidance_scale: float = 3.0
    """Classifier-free guidance weight (1 disables guidance)."""
    scheduler: SamplerName = "ddim"
    """Sampler, run on the model's own noise schedule; "checkpoint": the scheduler class and settings of the
    checkpoint's scheduler/scheduler_config.json (what its diffusers pipeline samples with)."""
    eta: float = 0.0
    """DDIM eta (0: deterministic steps after the initial noise)."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Network precision: auto = float16 on CUDA, float32 elsewhere."""
    vae_dtype: VaeDtypeName = "auto"
    """VAE precision: auto = float32 when dtype is float16 and the VAE's config has force_upcast (diffusers' rule,
    true for the SD VAEs), else dtype; same = dtype (diffusers' SD 1.x and InstructPix2Pix pipelines); or a dtype."""
    devices: Tuple[str, ...] = ()
    """Devices to split each batch across (e.g. ("cuda:0", "cuda:1")); empty: every visible CUDA device when set
    up on "cuda", else the setup device."""
    max_batch_size: int = 8
    """Most views per network call on one device (larger batches are processed in parts)."""
    background_color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """sRGB colour the object is composited on before the model sees it."""
    sds_t_range: Tuple[float, float] = (0.02, 0.98)
    """Score distillation: range of diffusion times (fractions of the training timesteps) sampled."""


@dataclass
class ViewChunk:
    """A part of a batch on one device: its views, and their squares at the model's resolution."""

    views: PriorViews
    """The part's views, with its cameras on the device, the target map as the prior's ``prepare_envmap`` returns it,
    and its list of per-view generators."""
    images: Float[Tensor, "b 3 r r"]
    """The images to refine at the model's resolution (sRGB in [0, 1], composited on the background, channel first)."""
    condition_images: Float[Tensor, "b 3 r r"]
    """The images the model is conditioned on (= ``images`` unless the caller gave others)."""


InitialLatents = Optional[Tuple[Float[Tensor, "b c h w"], float, int]]
"""Where :meth:`LatentDiffusionPrior.relight` starts: None for pure noise, or ``(latents, strength, num_steps)``
for an img2img start that re-runs ``strength`` of a ``num_steps`` schedule."""


class LatentDiffusionPrior(RelightingPrior):
    """Base class of the diffusers-based relighting priors (see the module docstring)."""

    config: LatentDiffusionPriorConfig

    config_class: ClassVar[Type[LatentDiffusionPriorConfig]] = LatentDiffusionPriorConfig
    component_names: ClassVar[Tuple[str, ...]] = ("unet", "vae")
    """Components besides the scheduler (subfolders of ``model_path``)."""
    unet_weights_field: ClassVar[Optional[str]] = None
    """The config field naming UNet weights merged over ``model_path``'s by :meth:`merge_unet_weights` (errors about
    the UNet name them); None for a prior that takes its UNet as it is."""

    def __init__(
        self,
        config: LatentDiffusionPriorConfig,
        device: Union[str, torch.device] = "cpu",
        components: Union[None, DiffusionComponents, Dict[str, Any]] = None,
    ) -> None:
        super().__init__(config, device)
        name = type(config).__name__
        if type(self) is LatentDiffusionPrior:
            raise ConfigError(name, "is the shared diffusion-prior config; choose a prior's own config")
        if components is None:
            option = f"{name}.model_path"
            loaded_as = CHECKPOINT_SCHEDULER if config.scheduler == CHECKPOINT_SCHEDULER else "ddim"
            components = DiffusionComponents.from_pretrained(config.model_path, self.component_names, loaded_as, option)
            components = self.adapt_components(components)
        elif isinstance(components, dict):
            components = DiffusionComponents.from_parts(components, self.component_names, self.error_path)
        self.check_components(components)
        devices = self._resolve_devices()
        self._device = devices[0]
        self.dtype = resolve_torch_dtype(config.dtype, devices[0], f"{name}.dtype")
        upcast = bool(getattr(components.vae.config, "force_upcast", False))
        self.vae_dtype = resolve_vae_dtype(config.vae_dtype, self.dtype, upcast, f"{name}.vae_dtype")
        components.scheduler = self.noise_schedule(components)
        components.with_sampler(config.scheduler, f"{name}.scheduler")
        first = components.to(devices[0], self.dtype, self.vae_dtype).freeze()
        self._replicas = [first, *(first.replica(d) for d in devices[1:])]
        self._resolution = self._checked_resolution()

    @classmethod
    def from_components(
        cls, config: Optional[LatentDiffusionPriorConfig] = None, device: Union[str, torch.device] = "cpu", **parts: Any
    ) -> "LatentDiffusionPrior":
        """Build the prior from component objects instead of ``config.model_path`` (tests pass tiny random ones).

        Example:
            >>> prior = NeuralGafferPrior.from_components(NeuralGafferPriorConfig(), **parts)  # doctest: +SKIP
        """
        return cls(config if config is not None else cls.config_class(), device=device, components=parts)

    # --- hooks for each prior -------------------------------------------------------------------------------------
    def adapt_components(self, components: DiffusionComponents) -> DiffusionComponents:
        """Change freshly loaded components; default: merge the UNet weights the config names (:attr:`unet_weights`),
        if any, over the loaded UNet with :meth:`merge_unet_weights`."""
        if self.unet_weights is not None:
            components.unet = self.merge_unet_weights(components.unet, self.unet_weights)
        return components

    def merge_unet_weights(self, unet: Any, weights: Union[str, Path]) -> Any:
        """The UNet with the weights at ``weights`` merged in (priors with a :attr:`unet_weights_field` implement it).

        Raises:
            WeightsError: the weights are missing, unreadable, or do not fit the UNet.
        """
        raise NotImplementedError(f"{type(self).__name__} merges no UNet weights")

    def check_components(self, components: DiffusionComponents) -> None:
        """Raise a one-line :class:`~relight3d.errors.WeightsError` when the components are not this prior's."""

    def noise_schedule(self, components: DiffusionComponents) -> Any:
        """The scheduler whose noise schedule the config's sampler is built on; default: the checkpoint's."""
        return components.scheduler

    def prepare_envmap(self, envmap: Float[Tensor, "H W 3"]) -> Float[Tensor, "H2 W2 3"]:
        """The target map as the prior uses it (once per call, before the batch is split)."""
        return envmap

    def condition(self, replica: DiffusionComponents, chunk: ViewChunk) -> Any:
        """Everything the noise prediction needs for these views (encoded images, maps, text...)."""
        raise NotImplementedError

    def predict_noise(
        self, replica: DiffusionComponents, latents: Float[Tensor, "b c h w"], t: Union[int, Tensor], condition: Any,
        scale: float,
    ) -> Float[Tensor, "b c h w"]:  # fmt: skip
        """Noise prediction (float32) for ``latents`` at timestep(s) ``t``, with guidance weight ``scale``."""
        raise NotImplementedError

    def initial_latents(self, replica: DiffusionComponents, chunk: ViewChunk, condition: Any) -> InitialLatents:
        """Where :meth:`relight` starts (see :data:`InitialLatents`); default: pure noise."""
        return None

    # --- description ----------------------------------------------------------------------------------------------
    @property
    def components(self) -> DiffusionComponents:
        """The networks and scheduler (the first device's copy)."""
        return self._replicas[0]

    @property
    def devices(self) -> List[torch.device]:
        """The devices a batch is split across."""
        return [r.device for r in self._replicas]

    @property
    def resolution(self) -> int:
        """Side of the square the model works at."""
        return self._resolution

    @property
    def supports_sds(self) -> bool:
        return True

    def save_pretrained(self, output_dir: Union[str, Path]) -> Path:
        """Write the components (float32) in the diffusers layout that ``model_path`` reads."""
        output_dir = self.components.save_pretrained(output_dir)
        (output_dir / "relight3d_prior.json").write_text(json.dumps({"prior": type(self).__name__}, indent=2) + "\n")
        return output_dir

    @property
    def unet_weights(self) -> Optional[Path]:
        """The UNet weights merged over ``model_path``'s (the config field :attr:`unet_weights_field` names) or None."""
        return getattr(self.config, self.unet_weights_field) if self.unet_weights_field else None

    @property
    def unet_source(self) -> Union[str, Path]:
        """What errors about the UNet name: merged UNet weights, else ``model_path/unet``, else the config."""
        if self.unet_weights is not None:
            return self.unet_weights
        return Path(self.config.model_path) / "unet" if self.config.model_path else type(self.config).__name__

    def _resolve_devices(self) -> List[torch.device]:
        if self.config.devices:
            return [torch.device(d) for d in self.config.devices]
        if self._device.type == "cuda" and self._device.index is None and torch.cuda.device_count() > 1:
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        return [self._device]

    def _checked_resolution(self) -> int:
        parts = self.components
        factor = parts.vae_scale_factor * 2 ** (len(parts.unet.config.block_out_channels) - 1)
        native = parts.native_resolution
        resolution = native if self.config.resolution is None else int(self.config.resolution)
        if resolution <= 0 or resolution % factor:
            raise ConfigError(
                f"{type(self.config).__name__}.resolution",
                f"{resolution} is not a positive multiple of {factor} (VAE x UNet downsampling); "
                f"this model's native resolution is {native}",
            )
        return resolution

    # --- sampling -------------------------------------------------------------------------------------------------
    def sample_chunk(
        self,
        replica: DiffusionComponents,
        chunk: ViewChunk,
        t_star: Optional[float],
    ) -> Float[Tensor, "b 3 r r"]:
        """Relight (``t_star`` None) or refine one part of a batch on one device."""
        generators = chunk.views.generator
        # Each view's noise is drawn first: Neural Gaffer's pipeline draws the initial latents, then samples its
        # condition latents from the same generators (sample_condition_latents).
        side = chunk.images.shape[-1] // replica.vae_scale_factor
        noise = per_view_noise(generators, (int(replica.vae.config.latent_channels), side, side), replica.device)
        condition = self.condition(replica, chunk)
        start, strength, num_steps = None, 1.0, self.config.num_inference_steps
        if t_star is None:
            initial = self.initial_latents(replica, chunk, condition)
            if initial is not None:
                start, strength, num_steps = initial
        elif t_star < 1.0:
            start, strength = replica.encode_images(chunk.images), max(float(t_star), 0.0)

        def predict(x: Tensor, t: Tensor) -> Tensor:
            return self.predict_noise(replica, x, t, condition, self.config.guidance_scale)

        latents = sample_latents(
            replica.scheduler, predict, noise, num_steps, start, strength, self.config.eta, generators
        )
        return replica.decode_latents(latents)

    def model_square(self, images: Tensor, masks: Tensor) -> Tuple[Float[Tensor, "b 3 r r"], Any]:
        """Views composited on the background and squared to the model's resolution (differentiable)."""
        background = self.config.background_color
        return to_square(composite(images.float().clamp(0.0, 1.0), masks, background), self.resolution, background)

    def _run(self, views: PriorViews, t_star: Optional[float]) -> Float[Tensor, "b h w 3"]:
        images, batch = views.images.detach().float(), views.batch_size
        generators = make_generators(views.generator, batch, self.config.seed)
        masks = views.masks.detach().float().clamp(0.0, 1.0).to(images.device)
        start, layout = self.model_square(images, masks)
        given = views.condition_images
        cond = start if given is None else self.model_square(given.detach().to(images.device), masks)[0]
        envmap = self.prepare_envmap(views.target_envmap.detach().float().to(self.device).clamp_min(0.0))
        cameras = views.cameras.detach().float()
        parts = [p for p in torch.arange(batch).tensor_split(len(self._replicas)) if p.numel() > 0]

        def work(replica: DiffusionComponents, indices: Tensor) -> Tensor:
            outputs = []
            on_device = torch.cuda.device(replica.device) if replica.device.type == "cuda" else contextlib.nullcontext()
            with torch.no_grad(), on_device:
                env = envmap.to(replica.device)
                for sub in indices.split(max(1, self.config.max_batch_size)):
                    to, gens = replica.device, [generators[int(i)] for i in sub]
                    part = PriorViews(images[sub], masks[sub], cameras[sub].to(to), env, gens)
                    chunk = ViewChunk(part, start[sub].to(to), cond[sub].to(to))
                    outputs.append(self.sample_chunk(replica, chunk, t_star).to(images.device))
            return torch.cat(outputs)

        if len(parts) == 1:
            results = [work(self._replicas[0], parts[0])]
        else:
            with ThreadPoolExecutor(max_workers=len(parts)) as pool:
                results = [f.result() for f in [pool.submit(work, self._replicas[i], p) for i, p in enumerate(parts)]]
        relit = from_square(torch.cat(results), layout).clamp(0.0, 1.0)
        return composite(relit, masks, images)

    # --- the contract ---------------------------------------------------------------------------------------------
    def relight_views(self, views: PriorViews) -> Float[Tensor, "b h w 3"]:
        """Sample each view under the target light (``gbuffers`` and ``source_envmap`` are not used)."""
        return self._run(views, None)

    def refine_views(self, views: PriorViews, t_star: float) -> Float[Tensor, "b h w 3"]:
        """SDEdit: re-run the last ``floor(num_inference_steps * t_star)`` steps from the noised image latent
        (``t_star >= 1``: from pure noise, as :meth:`relight`; ``t_star = 0``: the VAE round trip)."""
        return self._run(views, t_star)

    def sds_views(self, views: PriorViews, guidance_scale: Optional[float]) -> Dict[str, Tensor]:
        """Score-distillation loss of the views (differentiable in ``views.images``) under the target light.

        For each view a timestep ``t`` is drawn uniformly from ``sds_t_range``, the image latent is noised with
        ``eps`` and the guided prediction ``eps_hat`` gives the SDS gradient ``(1 - alpha_bar_t) (eps_hat - eps)``
        (DreamFusion's weighting, as in Neural Gaffer's ``train_step``), applied through
        :func:`~relight3d.priors.diffusion.guidance.score_distillation`.

        Returns:
            ``{"loss_sds": scalar, "grad_norm": scalar (norm of the gradient per view, averaged; detached)}``.
        """
        replica, batch = self.components, views.batch_size
        dev = replica.device
        generators = make_generators(views.generator, batch, self.config.seed)
        masks = views.masks.float().to(dev).clamp(0.0, 1.0)
        square = self.model_square(views.images.to(dev), masks)[0]
        given = views.condition_images
        cond = square.detach() if given is None else self.model_square(given.detach().to(dev), masks)[0]
        envmap = self.prepare_envmap(views.target_envmap.detach().float().to(dev).clamp_min(0.0))
        part = PriorViews(views.images, masks, views.cameras.detach().float().to(dev), envmap, generators)
        chunk = ViewChunk(part, square.detach(), cond)
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        with torch.no_grad():
            condition = self.condition(replica, chunk)
        latents = replica.encode_images(square)
        low, high = timestep_range(replica.scheduler, self.config.sds_t_range)
        steps = torch.tensor([int(torch.randint(low, high + 1, (1,), generator=g)) for g in generators], device=dev)
        noise = per_view_noise(generators, tuple(latents.shape[1:]), dev)
        alpha_bar = replica.scheduler.alphas_cumprod.to(dev)[steps].float()
        with torch.no_grad():
            a = alpha_bar.view(-1, 1, 1, 1)  # the training schedule's q(z_t | z), whatever the sampler
            noisy = a.sqrt() * latents.detach() + (1.0 - a).sqrt() * noise
            prediction = self.predict_noise(replica, noisy, steps, condition, scale)
            eps_hat = epsilon_from(prediction, noisy, alpha_bar, replica.scheduler.config.prediction_type)
        loss, grad = score_distillation(latents, noise, eps_hat, 1.0 - alpha_bar)
        return {"loss_sds": loss, "grad_norm": grad.flatten(1).norm(dim=1).mean()}
