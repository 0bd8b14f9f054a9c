"""The contract of relight3d's 2D relighting priors, and the conventions every prior follows.

A relighting prior takes views of an object and returns the same views under a target environment map. The
relighting pipeline owns the prior (the radiance field never sees it): stage 1 calls :meth:`RelightingPrior.relight`
on the training views, stage 2 calls :meth:`RelightingPrior.refine` on renders.

Tensors a prior takes (torch, on any device: the prior moves them to its own and returns results on the images'
device, as float32):

* ``images``: ``Float[Tensor, "b h w 3"]``, sRGB in [0, 1], straight (not premultiplied) colour. Any size: each
  prior pads the views to a square with its background colour, resizes them to its working resolution, and resizes
  the result back (see :func:`to_square` / :func:`from_square`).
* ``masks``: ``Float[Tensor, "b h w 1"]`` in [0, 1], 1 on the object. The prior sees the object composited on its
  own background colour, and its output is composited back onto the input images with these masks: pixels outside
  the object keep their input values.
* ``cameras``: ``Float[Tensor, "b 3 4"]`` (or ``"b 4 4"``) camera-to-world matrices in the Blender / OpenGL
  convention (camera x right, y up, looking down -z), world Z up. Plain tensors: priors do not depend on
  nerfstudio's ``Cameras``.
* ``target_envmap``: ``Float[Tensor, "H W 3"]``, linear HDR radiance, equirectangular in relight3d.lighting's
  (Blender's) convention, in world coordinates. Each prior expresses it in each view's camera frame itself.
* ``generator``: see :data:`GeneratorLike` and :func:`make_generators`. Sampling is deterministic under a seed, and
  each view gets its own random stream, so a view's result does not depend on how a batch is split.

Configs follow nerfstudio: ``RelightingPriorConfig`` (``_target`` + ``setup(device=...)``) with one subclass per
prior, model paths are config fields (never model ids in code) and nothing is downloaded.

A call's tensors travel together in a :class:`PriorViews` (``PriorViews(images, masks, cameras, target_envmap,
generator=...)``), which the caller builds once. A prior implements :meth:`RelightingPrior.relight_views` and
:meth:`RelightingPrior.refine_views` (and optionally :meth:`RelightingPrior.sds_views`); the public ``relight`` /
``refine`` / ``sds_loss`` methods check the views and call them. Loading pretrained weights is
shared by the diffusion priors in :mod:`relight3d.priors.diffusion`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor

from relight3d.errors import ConfigError, DataError

GeneratorLike = Union[None, int, torch.Generator, Sequence[torch.Generator]]
"""Randomness of one prior call: ``None`` (the config's seed), an int seed, one ``torch.Generator`` (per-view seeds
are drawn from it, so successive calls differ but replay identically), or one generator per view."""


class PriorError(DataError):
    """A prior cannot take an input (tensors of the wrong shape, missing G-buffers...).

    ``str(err)`` is one line: ``<model path or config name>: <problem>``.
    """


@dataclass
class RelightingPriorConfig(InstantiateConfig):
    """Base config of a 2D relighting prior; select a prior by using one of its subclasses."""

    _target: Type = field(default_factory=lambda: RelightingPrior)
    """Prior class to instantiate."""
    seed: int = 0
    """Seed of the prior's sampling when a call passes no generator."""

    def setup(self, device: Union[str, torch.device] = "cpu", **kwargs: Any) -> "RelightingPrior":
        """Build the prior on ``device`` (loading its weights, if it has any)."""
        if self._target is RelightingPrior:
            raise ConfigError(type(self).__name__, "is the abstract prior config; choose a prior's own config")
        return self._target(self, device=device, **kwargs)


@dataclass
class PriorViews:
    """The tensors of one prior call (see the module docstring for their conventions), checked by the prior."""

    images: Float[Tensor, "b h w 3"]
    """Views of the object, sRGB in [0, 1]."""
    masks: Float[Tensor, "b h w 1"]
    """Object masks (1 on the object)."""
    cameras: Float[Tensor, "b 3 4"]
    """Camera-to-world matrices (Blender / OpenGL convention, world Z up)."""
    target_envmap: Float[Tensor, "H W 3"]
    """Target light: linear HDR equirectangular map in world coordinates."""
    generator: GeneratorLike = None
    """Randomness (see :data:`GeneratorLike`)."""
    gbuffers: Optional[Dict[str, Tensor]] = None
    """Rendered G-buffers, for priors that list them in ``required_gbuffers``."""
    source_envmap: Optional[Float[Tensor, "H2 W2 3"]] = None
    """The light the images were captured under, for priors with ``needs_source_envmap``."""
    condition_images: Optional[Float[Tensor, "b h w 3"]] = None
    """What image-conditioned priors condition on in ``refine`` (default: the images themselves)."""

    @property
    def batch_size(self) -> int:
        """Number of views."""
        return int(self.images.shape[0])


class RelightingPrior(abc.ABC):
    """A 2D relighting prior. Not an ``nn.Module`` on purpose: a pipeline holding one does not write the frozen
    prior weights into its checkpoints."""

    config: RelightingPriorConfig

    required_gbuffers: Tuple[str, ...] = ()
    """Rendered G-buffers (names of ``render_view`` outputs such as ``"normals"``, ``"accumulation"``) this prior
    needs in ``PriorViews.gbuffers``; empty for image-space priors."""
    needs_source_envmap: bool = False
    """Whether the prior needs the light the input images were captured under (``source_envmap``)."""

    @property
    def visibility_settings(self) -> Optional[Tuple[int, int]]:
        """``(directions_height, volume_resolution)`` when the prior wants a ``"visibility"`` G-buffer: per pixel,
        the transmittance towards the ``directions_height x 2 directions_height`` map directions
        (:func:`relight3d.lighting.visibility_directions`) through the field's density sampled on a
        ``volume_resolution^3`` grid. None (the default) when it does not."""
        return None

    def __init__(self, config: RelightingPriorConfig, device: Union[str, torch.device] = "cpu") -> None:
        self.config = config
        self._device = torch.device(device)

    # --- description -----------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device the prior computes on (the first one, when a batch is split across several)."""
        return self._device

    @property
    def error_path(self) -> Union[str, Path]:
        """What error messages name: the model path when there is one, else the config's class name."""
        path = getattr(self.config, "model_path", None)
        return path if path is not None else type(self.config).__name__

    @property
    @abc.abstractmethod
    def resolution(self) -> Optional[int]:
        """Side of the square images the prior works at (views are resized to it and back), or None when the prior
        works at the input size."""

    @property
    def supports_sds(self) -> bool:
        """Whether :meth:`sds_loss` is implemented."""
        return False

    # --- the contract ----------------------------------------------------------------------------------------------
    def relight(self, views: PriorViews) -> Float[Tensor, "b h w 3"]:
        """The views relit under ``views.target_envmap`` (sRGB in [0, 1], the input's size); the same
        ``views.generator`` gives the same result.

        Example:
            >>> relit = prior.relight(PriorViews(images, masks, cameras, envmap, generator=0))  # doctest: +SKIP

        Raises:
            PriorError: tensors of the wrong shape or with non-finite values.
        """
        return self.relight_views(self.checked(views))

    def refine(self, views: PriorViews, t_star: float) -> Float[Tensor, "b h w 3"]:
        """``views.images`` (e.g. renders of a relit field) pulled towards the prior, SDEdit-style.

        Diffusion priors noise the images to a level set by ``t_star`` in [0, 1] and denoise them under the target
        light: ``t_star = 0`` changes nothing but the autoencoder round trip, ``t_star >= 1`` samples from pure
        noise (the same as :meth:`relight`). Priors without a diffusion process read ``t_star`` as a blend weight.
        Image-conditioned priors condition on ``views.condition_images`` when given (e.g. Neural Gaffer's original,
        unrelit view).

        Raises:
            PriorError: tensors of the wrong shape or with non-finite values.
        """
        return self.refine_views(self.checked(views), float(t_star))

    def sds_loss(self, views: PriorViews, guidance_scale: Optional[float] = None) -> Dict[str, Tensor]:
        """Optional score-distillation loss (``{"loss_sds": ..., "grad_norm": ...}``), differentiable in
        ``views.images`` (see :attr:`supports_sds`), with the config's guidance weight unless ``guidance_scale``.

        Raises:
            PriorError: tensors of the wrong shape or with non-finite values.
        """
        return self.sds_views(self.checked(views), guidance_scale)

    @abc.abstractmethod
    def relight_views(self, views: PriorViews) -> Float[Tensor, "b h w 3"]:
        """:meth:`relight` on checked views."""

    @abc.abstractmethod
    def refine_views(self, views: PriorViews, t_star: float) -> Float[Tensor, "b h w 3"]:
        """:meth:`refine` on checked views."""

    def sds_views(self, views: PriorViews, guidance_scale: Optional[float]) -> Dict[str, Tensor]:
        """:meth:`sds_loss` on checked views (priors with :attr:`supports_sds` implement it)."""
        raise NotImplementedError(f"{type(self).__name__} has no score-distillation loss")

    def checked(self, views: PriorViews) -> PriorViews:
        """``views``, after checking the shapes and values of their tensors (one-line :class:`PriorError`)."""
        where = self.error_path
        images, masks, cameras, envmap = views.images, views.masks, views.cameras, views.target_envmap
        if images.dim() != 4 or images.shape[-1] != 3:
            raise PriorError(where, f"images must be [b, h, w, 3] sRGB, got shape {tuple(images.shape)}")
        b, h, w, _ = images.shape
        if b == 0:
            raise PriorError(where, "empty batch of images")
        if masks.shape != (b, h, w, 1):
            raise PriorError(where, f"masks must be [{b}, {h}, {w}, 1] like the images, got {tuple(masks.shape)}")
        if cameras.shape not in ((b, 3, 4), (b, 4, 4)):
            raise PriorError(where, f"cameras must be [{b}, 3, 4] camera-to-world matrices, got {tuple(cameras.shape)}")
        if envmap.dim() != 3 or envmap.shape[-1] != 3 or envmap.shape[1] < 2:
            raise PriorError(where, f"target_envmap must be [H, W, 3], got shape {tuple(envmap.shape)}")
        cond = views.condition_images
        if cond is not None and cond.shape != images.shape:
            raise PriorError(where, f"condition_images must match images {tuple(images.shape)}: {tuple(cond.shape)}")
        for name, x in (("images", images), ("masks", masks), ("cameras", cameras), ("target_envmap", envmap)):
            if not torch.isfinite(x).all():
                raise PriorError(where, f"{name} hold NaN or infinite values")
        return views


# --- randomness ----------------------------------------------------------------------------------------------------
def make_generators(generator: GeneratorLike, batch_size: int, default_seed: int = 0) -> List[torch.Generator]:
    """One CPU generator per view, so that each view's noise is independent of how the batch is split.

    ``None`` or an int seed ``s``: the per-view seeds are drawn from a generator seeded with ``s`` (view ``i``
    always gets the same stream for the same seed). One ``torch.Generator``: the per-view seeds are drawn from it
    (advancing it). A sequence: used as is (its length must be ``batch_size``).

    Example:
        >>> a = make_generators(7, 2)
        >>> b = make_generators(7, 3)
        >>> torch.equal(torch.randn(3, generator=a[1]), torch.randn(3, generator=b[1]))
        True
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch_size:
            raise ValueError(f"{len(generator)} generators for a batch of {batch_size} views")
        return list(generator)
    if isinstance(generator, torch.Generator):
        source = generator
    else:
        seed = default_seed if generator is None else int(generator)
        source = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, 2**62, (batch_size,), generator=source, device=source.device).tolist()
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def per_view_noise(
    generators: Sequence[torch.Generator], shape: Tuple[int, ...], device: torch.device
) -> Float[Tensor, "b ..."]:
    """Standard normal noise of shape ``(len(generators), *shape)``: row ``i`` drawn on the CPU from generator ``i``
    (so results match across devices), then moved to ``device``."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


# --- resizing to the prior's square resolution and back -----------------------------------------------------------
@dataclass(frozen=True)
class SquareLayout:
    """Where the original views sit inside the padded square (to undo :func:`to_square`)."""

    height: int
    width: int
    side: int
    top: int
    left: int


def _resize(x: Tensor, size: Tuple[int, int], mode: str = "bilinear") -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    antialias = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    if mode == "bilinear":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    return F.interpolate(x, size=size, mode=mode)


def to_square(
    images: Float[Tensor, "b h w c"], size: int, fill: Union[float, Sequence[float]] = 0.0
) -> Tuple[Float[Tensor, "b c size size"], SquareLayout]:
    """Pad views to a centred square with ``fill`` (aspect ratio kept), then resize (antialiased bilinear) to ``size``.

    Returns channel-first images for the networks and the layout that :func:`from_square` inverts.

    Example:
        >>> x, layout = to_square(torch.rand(1, 20, 30, 3), 16)
        >>> x.shape, from_square(x, layout).shape
        (torch.Size([1, 3, 16, 16]), torch.Size([1, 20, 30, 3]))
    """
    b, h, w, c = images.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    fill_t = torch.as_tensor(fill, dtype=images.dtype, device=images.device).reshape(-1)
    if fill_t.numel() == 1:
        fill_t = fill_t.expand(c)
    square = fill_t.reshape(1, c, 1, 1).expand(b, c, side, side).clone()
    square[:, :, top : top + h, left : left + w] = images.permute(0, 3, 1, 2)
    return _resize(square, (size, size)), SquareLayout(h, w, side, top, left)


def from_square(square: Float[Tensor, "b c s s"], layout: SquareLayout) -> Float[Tensor, "b h w c"]:
    """Undo :func:`to_square`: resize back to the padded side and crop the original view."""
    x = _resize(square, (layout.side, layout.side))
    x = x[:, :, layout.top : layout.top + layout.height, layout.left : layout.left + layout.width]
    return x.permute(0, 2, 3, 1)


def composite(
    images: Float[Tensor, "b h w 3"], masks: Float[Tensor, "b h w 1"], background: Union[Tensor, Sequence[float]]
) -> Float[Tensor, "b h w 3"]:
    """``masks * images + (1 - masks) * background``; ``background`` is a colour or a tensor like ``images``."""
    bg = torch.as_tensor(background, dtype=images.dtype, device=images.device)
    return masks * images + (1.0 - masks) * bg
