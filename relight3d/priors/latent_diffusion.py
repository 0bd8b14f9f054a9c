"""Machinery shared by the latent-diffusion relighting priors (Neural Gaffer, InstructPix2Pix, IC-Light).

A prior here is a diffusers UNet + VAE (+ a text or image encoder) sampled with DDIM. Each prior only says how it
builds its conditioning for a batch of views and how it predicts noise with classifier-free guidance; this module
does the rest, identically for all of them:

* **Views in and out.** Views are composited on the prior's background colour, padded to a centred square and
  resized (antialiased bilinear) to ``resolution``; results are resized back, cropped, and composited onto the input
  images with the masks (pixels outside the object keep their input values).
* **Sampling.** DDIM (``eta`` from the config; ``clip_sample`` off, as Neural Gaffer and IC-Light run it) with the
  model's own noise schedule (its ``scheduler/`` config, whatever scheduler class it names). ``relight`` starts from
  pure noise (or from a prior-specific initial latent, e.g. IC-Light's lighting preview).
* **refine = SDEdit.** ``t_star`` is the fraction of the ``num_inference_steps`` DDIM steps that are re-run, with
  diffusers' img2img rule: ``k = floor(N t*)`` steps, i.e. the image latent is noised to the timestep of step
  ``N - k`` and denoised from there. ``t* = 0`` returns the VAE round trip of the image, ``t* >= 1`` samples from pure
  noise (exactly :meth:`relight`). Neural Gaffer's public stage-2 code calls the same quantity ``1 - strength``.
* **Randomness.** One CPU generator per view (:func:`relight3d.priors.base.make_generators`): a view's noise does
  not depend on the batch it is in, the device, or how a batch is split.
* **Several GPUs.** With ``devices`` in the config, or when set up on ``"cuda"`` with several CUDA devices visible,
  the prior keeps one copy of its networks per device and splits each batch into contiguous parts run in parallel
  threads (CUDA kernels run concurrently; results are gathered in order). This is plain data parallelism within
  one process, so it needs neither ``accelerate`` nor ``torchrun``. It is exercised here only with two CPU
  "devices" (this machine has no GPU): equal results to one device are tested, a real speed-up is not.
* **Score distillation.** :meth:`LatentDiffusionPrior.sds_loss` (on the first device), the DreamFusion loss in the
  form used by Neural Gaffer's ``train_step``.

diffusers and transformers are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.priors.base import (
    DTypeName,
    GeneratorLike,
    PriorError,
    RelightingPrior,
    RelightingPriorConfig,
    composite,
    from_square,
    make_generators,
    per_view_noise,
    resolve_torch_dtype,
    to_square,
)


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
    """DDIM steps of a full sampling run."""
    guidance_scale: float = 3.0
    """Classifier-free guidance weight (1 disables guidance)."""
    eta: float = 0.0
    """DDIM eta (0: deterministic steps after the initial noise)."""
    dtype: DTypeName = "auto"
    """Network precision: auto = float16 on CUDA, float32 elsewhere."""
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
class DeviceReplica:
    """One device's copy of the components (the scheduler too: ``set_timesteps`` mutates it)."""

    device: torch.device
    components: Dict[str, Any]
    scheduler: Any


@dataclass
class ViewChunk:
    """A part of a batch, at the model's resolution, on one device."""

    images: Float[Tensor, "b 3 r r"]
    """The images to refine (sRGB in [0, 1], composited on the background)."""
    condition_images: Float[Tensor, "b 3 r r"]
    """The images the model is conditioned on (= ``images`` unless the caller gave others)."""
    cameras: Float[Tensor, "b 3 4"]
    """Camera-to-world matrices."""
    envmap: Float[Tensor, "H W 3"]
    """The target map (world frame), after the prior's ``prepare_envmap``."""


def ddim_scheduler_from(scheduler: Any) -> Any:
    """A DDIM scheduler with the noise schedule of ``scheduler`` (any diffusers scheduler), ``clip_sample`` off."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler.config, clip_sample=False)


def batched_timesteps(t: Union[int, Tensor], batch: int, copies: int, device: torch.device) -> Tensor:
    """Timesteps for a UNet call on ``copies`` stacked copies of a batch (classifier-free guidance)."""
    t = torch.as_tensor(t, device=device)
    if t.dim() == 0:
        t = t.expand(batch)
    return t.repeat(copies)


class LatentDiffusionPrior(RelightingPrior):
    """Base class of the diffusers-based relighting priors (see the module docstring)."""

    config: LatentDiffusionPriorConfig

    config_class: ClassVar[Type[LatentDiffusionPriorConfig]] = LatentDiffusionPriorConfig
    component_names: ClassVar[Tuple[str, ...]] = ("unet", "vae")
    """Components besides the scheduler (networks, tokenizers); networks are moved to each device."""

    def __init__(
        self,
        config: LatentDiffusionPriorConfig,
        device: Union[str, torch.device] = "cpu",
        components: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(config, device)
        if components is None:
            components = self.load_components()
        missing = [n for n in (*self.component_names, "scheduler") if components.get(n) is None]
        if missing:
            raise PriorError(self.error_path, f"missing components: {', '.join(missing)}")
        self.check_components(components)
        devices = self._resolve_devices()
        self._device = devices[0]
        self.dtype = resolve_torch_dtype(config.dtype, devices[0])
        scheduler = ddim_scheduler_from(components["scheduler"])
        self._replicas: List[DeviceReplica] = []
        for i, dev in enumerate(devices):
            parts: Dict[str, Any] = {}
            for name in self.component_names:
                part = components[name] if i == 0 else copy.deepcopy(components[name])
                if isinstance(part, torch.nn.Module):  # plain Module.to: diffusers' override warns on any dtype
                    part = torch.nn.Module.to(part, device=dev, dtype=self.dtype).eval().requires_grad_(False)
                parts[name] = part
            self._replicas.append(DeviceReplica(dev, parts, copy.deepcopy(scheduler)))
        self._resolution = self._checked_resolution()

    # --- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_components(
        cls,
        config: Optional[LatentDiffusionPriorConfig] = None,
        device: Union[str, torch.device] = "cpu",
        **components: Any,
    ) -> "LatentDiffusionPrior":
        """Build the prior from component objects instead of ``config.model_path`` (tests pass tiny random ones).

        Example:
            >>> parts = dict(unet=unet, vae=vae, image_encoder=encoder, scheduler=scheduler)  # doctest: +SKIP
            >>> prior = NeuralGafferPrior.from_components(NeuralGafferPriorConfig(), **parts)  # doctest: +SKIP
        """
        return cls(config if config is not None else cls.config_class(), device=device, components=components)

    def load_components(self) -> Dict[str, Any]:
        """Load the components from ``config.model_path`` (each prior knows its layout)."""
        raise PriorError(
            type(self.config).__name__, "is the shared diffusion-prior config; choose a prior's own config"
        )

    def check_components(self, components: Dict[str, Any]) -> None:
        """Raise a one-line :class:`PriorError` when the components do not form this prior's architecture."""

    def save_pretrained(self, output_dir: Union[str, Path]) -> Path:
        """Write the components (first device's copy, float32) in the diffusers layout that ``model_path`` reads."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        for name, part in self._replicas[0].components.items():
            if isinstance(part, torch.nn.Module):
                copy.deepcopy(part).float().save_pretrained(output_dir / name)
            else:
                part.save_pretrained(output_dir / name)
        self._replicas[0].scheduler.save_pretrained(output_dir / "scheduler")
        (output_dir / "relight3d_prior.json").write_text(json.dumps({"prior": type(self).__name__}, indent=2) + "\n")
        return output_dir

    def _resolve_devices(self) -> List[torch.device]:
        if self.config.devices:
            return [torch.device(d) for d in self.config.devices]
        if self._device.type == "cuda" and self._device.index is None and torch.cuda.device_count() > 1:
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        return [self._device]

    # --- properties -----------------------------------------------------------------------------------------------
    @property
    def devices(self) -> List[torch.device]:
        """The devices a batch is split across."""
        return [r.device for r in self._replicas]

    @property
    def unet(self) -> Any:
        """The denoising UNet (first device's copy)."""
        return self._replicas[0].components["unet"]

    @property
    def vae(self) -> Any:
        """The autoencoder (first device's copy)."""
        return self._replicas[0].components["vae"]

    @property
    def scheduler(self) -> Any:
        """The DDIM scheduler (first device's copy)."""
        return self._replicas[0].scheduler

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        """The size the UNet was configured for: its sample size times the VAE's downsampling."""
        sample_size = self.unet.config.sample_size
        if isinstance(sample_size, (list, tuple)):
            sample_size = sample_size[0]
        return int(sample_size) * self.vae_scale_factor

    @property
    def resolution(self) -> int:
        """Side of the square the model works at."""
        return self._resolution

    @property
    def supports_sds(self) -> bool:
        return True

    def _checked_resolution(self) -> int:
        factor = self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        native = self.native_resolution
        resolution = native if self.config.resolution is None else int(self.config.resolution)
        if resolution <= 0 or resolution % factor:
            raise PriorError(
                self.error_path,
                f"resolution {resolution} is not a positive multiple of {factor} (VAE x UNet downsampling); "
                f"this model's native resolution is {native}",
            )
        return resolution

    # --- hooks for each prior -------------------------------------------------------------------------------------
    def prepare_envmap(self, envmap: Float[Tensor, "H W 3"]) -> Float[Tensor, "H2 W2 3"]:
        """The target map as the prior uses it (once per call, before the batch is split)."""
        return envmap

    def condition(self, replica: DeviceReplica, chunk: ViewChunk, generators: Sequence[torch.Generator]) -> Any:
        """Everything the noise prediction needs for these views (encoded images, maps, text...)."""
        raise NotImplementedError

    def predict_noise(
        self,
        replica: DeviceReplica,
        latents: Float[Tensor, "b c h w"],
        t: Union[int, Tensor],
        condition: Any,
        guidance_scale: Optional[float] = None,
    ) -> Float[Tensor, "b c h w"]:
        """Guided noise prediction for ``latents`` (float32) at timestep(s) ``t``."""
        raise NotImplementedError

    def initial_latents(
        self, replica: DeviceReplica, chunk: ViewChunk, condition: Any
    ) -> Optional[Tuple[Float[Tensor, "b c h w"], float]]:
        """Where :meth:`relight` starts: None for pure noise, or ``(latents, strength)`` for an img2img start."""
        return None

    def steps_for(self, strength: Optional[float], from_initial_latents: bool) -> int:
        """DDIM steps of the schedule for a run that keeps ``strength`` of it."""
        return self.config.num_inference_steps

    # --- VAE ------------------------------------------------------------------------------------------------------
    def encode_images(
        self,
        replica: DeviceReplica,
        images: Float[Tensor, "b 3 r r"],
        scaled: bool = True,
        generators: Optional[Sequence[torch.Generator]] = None,
    ) -> Float[Tensor, "b c h w"]:
        """VAE latents of sRGB images in [0, 1]: the posterior mean (or a sample with ``generators``), times the
        VAE's scaling factor when ``scaled``."""
        vae = replica.components["vae"]
        posterior = vae.encode((images * 2.0 - 1.0).to(self.dtype)).latent_dist
        if generators is None:
            latents = posterior.mode()
        else:
            noise = per_view_noise(generators, tuple(posterior.mean.shape[1:]), replica.device)
            latents = posterior.mean + posterior.std * noise.to(posterior.mean.dtype)
        latents = latents.float()
        return latents * vae.config.scaling_factor if scaled else latents

    def decode_latents(self, replica: DeviceReplica, latents: Float[Tensor, "b c h w"]) -> Float[Tensor, "b 3 r r"]:
        """sRGB images in [0, 1] of (scaled) latents."""
        vae = replica.components["vae"]
        images = vae.decode((latents / vae.config.scaling_factor).to(self.dtype)).sample.float()
        return (images / 2.0 + 0.5).clamp(0.0, 1.0)

    # --- sampling -------------------------------------------------------------------------------------------------
    def _latent_shape(self, replica: DeviceReplica) -> Tuple[int, int, int]:
        side = self.resolution // self.vae_scale_factor
        return (int(replica.components["vae"].config.latent_channels), side, side)

    def sample_chunk(
        self,
        replica: DeviceReplica,
        chunk: ViewChunk,
        generators: Sequence[torch.Generator],
        t_star: Optional[float],
    ) -> Float[Tensor, "b 3 r r"]:
        """Relight (``t_star`` None) or refine one part of a batch on one device."""
        condition = self.condition(replica, chunk, generators)
        if t_star is None:
            start = self.initial_latents(replica, chunk, condition)
            from_initial = start is not None
        elif t_star >= 1.0:
            start, from_initial = None, False
        else:
            start, from_initial = (self.encode_images(replica, chunk.images), max(float(t_star), 0.0)), False
        num_steps = self.steps_for(None if start is None else start[1], from_initial)
        scheduler = replica.scheduler
        scheduler.set_timesteps(num_steps, device=replica.device)
        timesteps = scheduler.timesteps
        noise = per_view_noise(generators, self._latent_shape(replica), replica.device)
        if start is None:
            latents = noise * scheduler.init_noise_sigma
        else:
            start_latents, strength = start
            kept = min(int(num_steps * strength + 1e-6), num_steps)
            if kept == 0:
                return self.decode_latents(replica, start_latents)
            timesteps = timesteps[num_steps - kept :]
            latents = scheduler.add_noise(start_latents, noise, timesteps[:1])
        for t in timesteps:
            model_input = scheduler.scale_model_input(latents, t)
            noise_pred = self.predict_noise(replica, model_input, t, condition)
            latents = scheduler.step(
                noise_pred, t, latents, eta=self.config.eta, generator=list(generators), return_dict=False
            )[0]
        return self.decode_latents(replica, latents)

    def _prepare_views(
        self,
        images: Tensor,
        masks: Tensor,
        condition_images: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor, Any]:
        background = self.config.background_color
        images = images.detach().float().clamp(0.0, 1.0)
        masks = masks.detach().float().clamp(0.0, 1.0).to(images.device)
        start, layout = to_square(composite(images, masks, background), self.resolution, background)
        if condition_images is None:
            cond = start
        else:
            cond_in = condition_images.detach().float().clamp(0.0, 1.0).to(images.device)
            cond = to_square(composite(cond_in, masks, background), self.resolution, background)[0]
        return start, cond, layout

    def _run(
        self,
        images: Tensor,
        masks: Tensor,
        cameras: Tensor,
        target_envmap: Tensor,
        t_star: Optional[float],
        condition_images: Optional[Tensor],
        generator: GeneratorLike,
    ) -> Tensor:
        batch = self.check_inputs(images, masks, cameras, target_envmap, condition_images)
        generators = make_generators(generator, batch, self.config.seed)
        start, cond, layout = self._prepare_views(images, masks, condition_images)
        envmap = self.prepare_envmap(target_envmap.detach().float().to(self.device).clamp_min(0.0))
        cameras = cameras.detach().float()
        parts = [p for p in torch.arange(batch).tensor_split(len(self._replicas)) if p.numel() > 0]

        def work(replica: DeviceReplica, indices: Tensor) -> Tensor:
            outputs = []
            with torch.no_grad(), _on_device(replica.device):
                env = envmap.to(replica.device)
                for sub in indices.split(max(1, self.config.max_batch_size)):
                    chunk = ViewChunk(
                        images=start[sub].to(replica.device),
                        condition_images=cond[sub].to(replica.device),
                        cameras=cameras[sub].to(replica.device),
                        envmap=env,
                    )
                    gens = [generators[int(i)] for i in sub]
                    outputs.append(self.sample_chunk(replica, chunk, gens, t_star).to(images.device))
            return torch.cat(outputs)

        if len(parts) == 1:
            results = [work(self._replicas[0], parts[0])]
        else:
            with ThreadPoolExecutor(max_workers=len(parts)) as pool:
                futures = [pool.submit(work, self._replicas[i], p) for i, p in enumerate(parts)]
                results = [f.result() for f in futures]
        relit = from_square(torch.cat(results), layout).clamp(0.0, 1.0)
        masks = masks.detach().float().clamp(0.0, 1.0).to(images.device)
        return composite(relit, masks, images.detach().float())

    # --- the contract ---------------------------------------------------------------------------------------------
    def relight(
        self,
        images: Float[Tensor, "b h w 3"],
        masks: Float[Tensor, "b h w 1"],
        cameras: Float[Tensor, "b 3 4"],
        target_envmap: Float[Tensor, "H W 3"],
        *,
        generator: GeneratorLike = None,
        gbuffers: Optional[Dict[str, Tensor]] = None,
        source_envmap: Optional[Tensor] = None,
    ) -> Float[Tensor, "b h w 3"]:
        """The views relit under ``target_envmap`` (see :meth:`RelightingPrior.relight`); ``gbuffers`` and
        ``source_envmap`` are not used by diffusion priors."""
        return self._run(images, masks, cameras, target_envmap, None, None, generator)

    def refine(
        self,
        images: Float[Tensor, "b h w 3"],
        masks: Float[Tensor, "b h w 1"],
        cameras: Float[Tensor, "b 3 4"],
        target_envmap: Float[Tensor, "H W 3"],
        t_star: float,
        *,
        condition_images: Optional[Float[Tensor, "b h w 3"]] = None,
        generator: GeneratorLike = None,
        gbuffers: Optional[Dict[str, Tensor]] = None,
        source_envmap: Optional[Tensor] = None,
    ) -> Float[Tensor, "b h w 3"]:
        """SDEdit: re-run the last ``floor(num_inference_steps * t_star)`` DDIM steps from the noised image latent
        (``t_star >= 1``: from pure noise, as :meth:`relight`; ``t_star = 0``: the VAE round trip)."""
        return self._run(images, masks, cameras, target_envmap, float(t_star), condition_images, generator)

    def sds_loss(
        self,
        images: Float[Tensor, "b h w 3"],
        masks: Float[Tensor, "b h w 1"],
        cameras: Float[Tensor, "b 3 4"],
        target_envmap: Float[Tensor, "H W 3"],
        *,
        condition_images: Optional[Float[Tensor, "b h w 3"]] = None,
        generator: GeneratorLike = None,
        guidance_scale: Optional[float] = None,
        **unused: Any,
    ) -> Dict[str, Tensor]:
        """Score-distillation loss of ``images`` (differentiable in them) under the target light.

        For each view a timestep ``t`` is drawn uniformly from ``sds_t_range``, the image latent ``z`` is noised with
        ``eps`` and the guided prediction ``eps_hat`` gives the SDS gradient ``g = (1 - alpha_bar_t) (eps_hat - eps)``
        (DreamFusion's weighting, as in Neural Gaffer's ``train_step``). The loss is
        ``0.5 * sum((z - sg(z - g))^2) / b`` whose gradient with respect to ``z`` is exactly ``g / b`` (``sg`` =
        stop-gradient), so backpropagation sends ``g`` through the VAE encoder into the images without ever
        differentiating the UNet.

        Returns:
            ``{"loss_sds": scalar, "grad_norm": scalar (norm of g, detached)}``.
        """
        batch = self.check_inputs(images, masks, cameras, target_envmap, condition_images)
        replica = self._replicas[0]
        generators = make_generators(generator, batch, self.config.seed)
        background = self.config.background_color
        images_dev = images.float().to(replica.device).clamp(0.0, 1.0)
        masks_dev = masks.float().to(replica.device).clamp(0.0, 1.0)
        square, _ = to_square(composite(images_dev, masks_dev, background), self.resolution, background)
        if condition_images is None:
            cond_square = square.detach()
        else:
            cond_in = composite(condition_images.detach().float().to(replica.device), masks_dev, background)
            cond_square = to_square(cond_in, self.resolution, background)[0]
        chunk = ViewChunk(
            images=square.detach(),
            condition_images=cond_square,
            cameras=cameras.detach().float().to(replica.device),
            envmap=self.prepare_envmap(target_envmap.detach().float().to(replica.device).clamp_min(0.0)),
        )
        with torch.no_grad():
            condition = self.condition(replica, chunk, generators)
        latents = self.encode_images(replica, square)
        scheduler = replica.scheduler
        total = scheduler.config.num_train_timesteps
        low, high = (int(total * r) for r in self.config.sds_t_range)
        steps = torch.tensor(
            [int(torch.randint(low, high + 1, (1,), generator=g)) for g in generators], device=replica.device
        )
        noise = per_view_noise(generators, tuple(latents.shape[1:]), replica.device)
        with torch.no_grad():
            noisy = scheduler.add_noise(latents.detach(), noise, steps)
            noise_pred = self.predict_noise(replica, noisy, steps, condition, guidance_scale)
            alphas = scheduler.alphas_cumprod.to(replica.device)[steps].float()
            grad = torch.nan_to_num((1.0 - alphas).view(-1, 1, 1, 1) * (noise_pred - noise))
        target = (latents - grad).detach()
        loss = 0.5 * F.mse_loss(latents, target, reduction="sum") / batch
        return {"loss_sds": loss, "grad_norm": grad.norm()}


class _on_device:
    """``torch.cuda.device(d)`` for CUDA devices (thread-local current device), nothing otherwise."""

    def __init__(self, device: torch.device) -> None:
        self._ctx = torch.cuda.device(device) if device.type == "cuda" else None

    def __enter__(self) -> None:
        if self._ctx is not None:
            self._ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


def load_components(
    model_path: Path, layout: Dict[str, Any], config_name: str, optional: Sequence[str] = ()
) -> Dict[str, Any]:
    """Load ``{name: component_class}`` from the subfolders of ``model_path`` (one-line errors naming the path).

    Components listed in ``optional`` are None where their subfolder is absent.
    """
    from relight3d.priors.base import load_pretrained_component, require_model_dir

    required = [name for name in layout if name not in optional]
    path = require_model_dir(model_path, config_name, required)
    return {
        name: (load_pretrained_component(cls, path, name) if (path / name).exists() else None)
        for name, cls in layout.items()
    }


def guided(uncond: Tensor, cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def encode_prompts(
    tokenizer: Any, text_encoder: Any, prompts: Sequence[str], device: torch.device
) -> Float[Tensor, "b n d"]:
    """CLIP text embeddings (last hidden state, float32) of prompts padded to the tokenizer's maximum length, as
    diffusers' Stable Diffusion pipelines compute them."""
    tokens = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    attention_mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        attention_mask = tokens.attention_mask.to(device)
    return text_encoder(tokens.input_ids.to(device), attention_mask=attention_mask)[0].float()
