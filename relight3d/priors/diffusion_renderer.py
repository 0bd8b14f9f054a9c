"""DiffusionRenderer (Liang et al., CVPR 2025): relighting by a G-buffer- and lighting-conditioned video diffusion.

The prior hands the views' G-buffers (base colour, normals, depth, roughness, metallic) and the target map in each
view's camera frame to a DiffusionRenderer-style *forward* renderer; its relit frames are the prior's output. The
conventions (what each G-buffer and lighting image holds, and why) are those of
:mod:`relight3d.data.gbuffer_frames` and :mod:`relight3d.lighting.diffusion_renderer_encodings`, which follow NVIDIA's
Cosmos code (``nv-tlabs/cosmos1-diffusion-renderer``). Two backends (``DiffusionRendererPriorConfig.backend``):

* ``"checkout"``: NVIDIA's model, run from the user's own checkout of that repository and its Python environment
  (NVIDIA licence: nothing of it ships with relight3d). Its command line takes neither custom maps nor camera
  poses, so relight3d writes a *job folder* and runs an entry point (by default
  :mod:`relight3d.priors.diffusion_renderer_adapter`) that calls ``DiffusionRendererPipeline.generate_video`` with
  the lighting tensors itself. Needs a GPU with the memory of a 7B video model; nothing here can test it with the
  real weights (the tests drive the same file contract with a stand-in entry point).
* ``"builtin"``: relight3d's own small latent denoiser conditioned the same way, in diffusers terms (a
  ``UNet2DConditionModel`` + ``AutoencoderKL``, DDIM), loaded from ``model_path`` like the other diffusion priors.
  Its weights come from training (not in this module); :func:`tiny_builtin_folder` writes a random one for tests.

**G-buffers** (``PriorViews.gbuffers``, rendered by the pipeline; :attr:`DiffusionRendererPrior.required_gbuffers`):
``normals`` (world space, unit, ``[b, h, w, 3]``), ``depth`` (distance along the ray, ``[b, h, w, 1]``),
``accumulation`` (object coverage, ``[b, h, w, 1]``), ``base_color`` (linear, ``[b, h, w, 3]``), ``roughness`` and
``metallic`` (``[b, h, w, 1]``). ``accumulation`` is the G-buffers' mask; the output is composited onto the input
images with ``PriorViews.masks`` (pixels outside the object keep their input values, as every prior does).

**The job folder** (checkout backend; :func:`write_job` writes it, :func:`read_relit_frames` reads the result)::

    job.json                                   format, version, size, frame count, steps, guidance, clips, folders
    gbuffer_frames/<clip>/0000.<frame>.<pass>.png   write_gbuffer_frames' layout (what DR's forward loader reads)
    lighting/<clip>/0000.<frame>.env_ldr.png   the three lighting images of the frame's camera, 8-bit RGB,
    lighting/<clip>/0000.<frame>.env_log.png   [0, 1] (the model takes 2 x - 1 of each: env_nrm then holds the
    lighting/<clip>/0000.<frame>.env_nrm.png   texel directions d as 0.5 d + 0.5), at the job's height x width
    relit/<clip>/0000.<frame>.relit.png        written by the entry point: the relit frame, 8-bit sRGB RGB,
                                               height x width, one per frame of the clip (padding frames not written)
    entry_point.log                            the entry point's stdout and stderr (written by the prior)

Clips are ``clip0000``, ``clip0001``, ...: the views in their given order, ``frames_per_clip`` at a time, each clip
one DiffusionRenderer video of ``num_video_frames`` frames (the smallest ``8 n + 1`` that holds the longest clip;
shorter clips are padded by repeating their last frame, as DR's loader does). Every frame is written at the views'
size; DR's loader resizes the G-buffers to ``height x width`` (aspect not kept), the lighting is encoded at that size
and the relit frames are resized back. Each clip has its own seed, drawn from the first of its views' generators.
8-bit lighting images lose nothing the model keeps: ``generate_video`` casts its inputs to bfloat16, whose step near
1 (2^-7) is coarser than 8-bit's 2/255 in [-1, 1].

Example:
    >>> config = DiffusionRendererPriorConfig(checkout=Path("~/src/cosmos1-diffusion-renderer"),
    ...                                       python=Path("~/miniconda3/envs/cosmos-predict1/bin/python"))
    >>> relit = config.setup().relight(PriorViews(images, masks, cameras, envmap, gbuffers=gbuffers))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.data.gbuffer_frames import (
    CHUNK,
    GBufferFrame,
    encode_gbuffer_frame,
    write_gbuffer_frames,
)
from relight3d.errors import ConfigError, DataError, WeightsError
from relight3d.lighting.diffusion_renderer_encodings import Convention, encode_envmap_for_diffusion_renderer
from relight3d.priors.base import (
    GeneratorLike,
    PriorError,
    PriorViews,
    RelightingPrior,
    composite,
    make_generators,
    to_square,
)
from relight3d.priors.diffusion.components import DiffusionComponents
from relight3d.priors.diffusion.guidance import guided_noise
from relight3d.priors.latent_diffusion import LatentDiffusionPrior, LatentDiffusionPriorConfig, ViewChunk

GBUFFER_CHANNELS: Dict[str, int] = {
    "normals": 3,
    "depth": 1,
    "accumulation": 1,
    "base_color": 3,
    "roughness": 1,
    "metallic": 1,
}
"""The G-buffers the prior consumes (``render_view`` output names) and their channels."""

FORWARD_CHECKPOINT = "Diffusion_Renderer_Forward_Cosmos_7B"
"""DR's forward model folder under the checkpoint folder (``inference_forward_renderer.py``'s
``--diffusion_transformer_dir``); it holds ``model.pt``."""
TOKENIZER_DIR = "Cosmos-Tokenize1-CV8x8x8-720p"
"""The video tokenizer's folder (``world_generation_pipeline._load_tokenizer``)."""
TOKENIZER_FILES = ("encoder.jit", "decoder.jit", "mean_std.pt")
"""What ``pretrained_vae.py`` loads from the tokenizer folder for videos."""
PIPELINE_CONFIG = Path("cosmos_predict1/diffusion/config/diffusion_renderer_config.py")
"""The model config ``DiffusionRendererPipeline._load_model`` reads, relative to the checkout (the working dir)."""
ADAPTER = Path(__file__).with_name("diffusion_renderer_adapter.py")
"""relight3d's default entry point (runs in the DiffusionRenderer environment)."""

VIDEO_FRAME_COUNTS = tuple(8 * n + 1 for n in range(16))
"""``--num_video_frames`` values of DR's video layout (``8 n + 1``, 1 to 121; ``inference_utils.add_common_arguments``
also lists 10 and 117, which are not used here)."""
JOB_FORMAT = "relight3d-diffusion-renderer-job"
"""``job.json``'s ``format``."""
JOB_VERSION = 1
"""``job.json``'s ``version``: the layout and conventions of this module's docstring."""
JOB_FILE = "job.json"
GBUFFER_FOLDER = "gbuffer_frames"
LIGHTING_FOLDER = "lighting"
OUTPUT_FOLDER = "relit"
LOG_FILE = "entry_point.log"
LIGHTING_PASSES = ("env_ldr", "env_log", "env_nrm")
"""The lighting images, in the order of :class:`DiffusionRendererLighting`'s fields (ldr, log_hdr, directions)."""
DEFAULT_FPS = 24
"""DR's ``--fps`` default (the model takes it as a condition)."""

BUILTIN_CONDITIONS = ("basecolor", "normal", "depth", "roughness_metallic", "env_ldr", "env_log", "env_nrm")
"""The builtin UNet's condition images, in ``conv_in`` order after the noisy latent (see
:func:`builtin_channel_layout`)."""
BUILTIN_IN_CHANNELS = 4 * (1 + len(BUILTIN_CONDITIONS))
"""``conv_in`` width of the builtin UNet with a 4-channel VAE: the noisy latent and seven condition latents."""

Backend = Literal["checkout", "builtin"]


@dataclass
class DiffusionRendererPriorConfig(LatentDiffusionPriorConfig):
    """DiffusionRenderer: relighting from G-buffers and the target map in each camera's frame.

    ``backend="checkout"`` runs NVIDIA's forward renderer from the user's checkout (the checkout fields);
    ``backend="builtin"`` runs relight3d's own denoiser from ``model_path`` (the fields shared with the other
    diffusion priors: scheduler, dtype, devices, resolution...)."""

    _target: Type = field(default_factory=lambda: DiffusionRendererPrior)
    """Prior class to instantiate."""
    backend: Backend = "checkout"
    """checkout: NVIDIA's model from the user's checkout and environment; builtin: relight3d's denoiser (model_path)."""
    checkout: Optional[Path] = None
    """checkout: the user's clone of nv-tlabs/cosmos1-diffusion-renderer (the entry point runs with this working
    directory and this folder on PYTHONPATH)."""
    checkpoint_dir: Optional[Path] = None
    """checkout: the folder holding Diffusion_Renderer_Forward_Cosmos_7B/ and Cosmos-Tokenize1-CV8x8x8-720p/; None:
    <checkout>/checkpoints (where DR's download script puts them)."""
    python: Optional[Path] = None
    """checkout: the Python interpreter of the DiffusionRenderer environment; None: the one running relight3d."""
    entry_point: Optional[Path] = None
    """checkout: the script run as `python <entry_point> --job <job> --checkout <checkout> --checkpoint_dir <dir>`;
    None: relight3d's adapter (relight3d/priors/diffusion_renderer_adapter.py)."""
    work_dir: Optional[Path] = None
    """checkout: where job folders are made (and kept, for inspection); None: a temporary folder, removed after
    the run."""
    timeout_s: float = 3600.0
    """checkout: seconds the entry point may run before it is stopped."""
    height: int = 704
    """checkout: the video height DR works at (--height; a multiple of 16)."""
    width: int = 1280
    """checkout: the video width DR works at (--width; a multiple of 16)."""
    guidance: float = 0.0
    """checkout: DR's --guidance (0: its default, the conditional prediction alone)."""
    frames_per_clip: int = 1
    """checkout: views per DR video (1 to 121). 1 relights every view on its own, as DR's image command does, and
    keeps a view's result independent of its batch; more makes DR's frames consistent across views in their
    given order."""
    offload: bool = False
    """checkout: offload the diffusion network and the tokenizer between uses (DR's --offload_diffusion_transformer
    --offload_tokenizer), for GPUs with less memory."""
    num_inference_steps: int = 15
    """Sampler steps (checkout: DR's --num_steps; builtin: DDIM steps)."""
    seed: int = 1000
    """Root seed when a call passes no generator (DR's --seed default); each view's stream is drawn from it."""
    guidance_scale: float = 1.0
    """builtin: classifier-free guidance weight with every condition zeroed in the unconditional branch (1: none,
    the conditional prediction alone, as DR runs by default)."""
    convention: Convention = "cosmos"
    """Handedness of the camera-frame lighting (see relight3d.lighting.diffusion_renderer_encodings): cosmos mirrors
    the world map as the Cosmos loader does, svd does not."""
    envmap_height: Optional[int] = 512
    """The target map is shrunk to this many rows (power-preserving, on the sphere) before the lighting images are
    sampled from it, against aliasing (DR itself resamples to a 512 x 512 cube map); None or a smaller map: as is."""


@dataclass
class JobClip:
    """One DiffusionRenderer video of a job."""

    name: str
    """Folder name under gbuffer_frames/, lighting/ and relit/."""
    frames: int
    """Views in the clip (the video is padded to the job's num_video_frames)."""
    seed: int
    """DR's seed for this clip."""


@dataclass
class DiffusionRendererJob:
    """What ``job.json`` holds (see the module docstring)."""

    height: int
    width: int
    num_video_frames: int
    num_steps: int
    guidance: float
    convention: str
    clips: List[JobClip]
    fps: int = DEFAULT_FPS

    def to_json(self) -> Dict[str, Any]:
        """The ``job.json`` document."""
        return {
            "format": JOB_FORMAT,
            "version": JOB_VERSION,
            "height": self.height,
            "width": self.width,
            "num_video_frames": self.num_video_frames,
            "num_steps": self.num_steps,
            "guidance": self.guidance,
            "fps": self.fps,
            "lighting_convention": self.convention,
            "gbuffer_folder": GBUFFER_FOLDER,
            "lighting_folder": LIGHTING_FOLDER,
            "output_folder": OUTPUT_FOLDER,
            "clips": [{"name": c.name, "frames": c.frames, "seed": c.seed} for c in self.clips],
        }


def frame_stem(frame: int) -> str:
    """``0000.<frame:04d>``: the chunk and frame part of every per-frame file name."""
    return f"{CHUNK}.{frame:04d}"


def lighting_path(job_dir: Path, clip: str, frame: int, name: str) -> Path:
    """``lighting/<clip>/0000.<frame>.<name>.png`` (``name`` in :data:`LIGHTING_PASSES`)."""
    return Path(job_dir) / LIGHTING_FOLDER / clip / f"{frame_stem(frame)}.{name}.png"


def relit_path(job_dir: Path, clip: str, frame: int) -> Path:
    """``relit/<clip>/0000.<frame>.relit.png``: where the entry point writes a relit frame."""
    return Path(job_dir) / OUTPUT_FOLDER / clip / f"{frame_stem(frame)}.relit.png"


def video_frame_count(frames: int) -> int:
    """The smallest DR video length (``8 n + 1``) that holds ``frames`` frames.

    Example:
        >>> video_frame_count(1), video_frame_count(2), video_frame_count(57)
        (1, 9, 57)
    """
    for count in VIDEO_FRAME_COUNTS:
        if count >= frames:
            return count
    raise ValueError(f"{frames} frames do not fit one DiffusionRenderer video (at most {VIDEO_FRAME_COUNTS[-1]})")


def gbuffer_frames(views: PriorViews, where: Union[str, Path]) -> List[GBufferFrame]:
    """The views' G-buffers (``views.gbuffers``, see the module docstring) as :class:`GBufferFrame` s on the CPU.

    Raises:
        PriorError: a G-buffer is missing or of the wrong shape (``where`` names the prior).
    """
    given = views.gbuffers or {}
    missing = [name for name in GBUFFER_CHANNELS if name not in given]
    if missing:
        raise PriorError(where, f"needs the G-buffers {', '.join(missing)} in PriorViews.gbuffers")
    b, h, w = views.images.shape[:3]
    for name, channels in GBUFFER_CHANNELS.items():
        if tuple(given[name].shape) != (b, h, w, channels):
            raise PriorError(
                where, f"G-buffer {name} has shape {tuple(given[name].shape)}, expected {(b, h, w, channels)}"
            )
    cpu = {name: given[name].detach().to("cpu", torch.float32).nan_to_num(0.0) for name in GBUFFER_CHANNELS}
    cameras = views.cameras.detach().to("cpu", torch.float32)
    return [
        GBufferFrame(
            base_color=cpu["base_color"][i],
            normals=cpu["normals"][i],
            depth=cpu["depth"][i],
            roughness=cpu["roughness"][i],
            metallic=cpu["metallic"][i],
            mask=cpu["accumulation"][i].clamp(0.0, 1.0),
            camera_to_world=cameras[i, :3],
        )
        for i in range(b)
    ]


def _to_uint8(image: Tensor) -> np.ndarray:
    return np.ascontiguousarray((image.detach().float().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy())


def write_job(
    job_dir: Path,
    frames: Sequence[GBufferFrame],
    envmap: Float[Tensor, "H W 3"],
    seeds: Sequence[int],
    height: int = 704,
    width: int = 1280,
    num_steps: int = 15,
    guidance: float = 0.0,
    frames_per_clip: int = 1,
    convention: Convention = "cosmos",
) -> DiffusionRendererJob:
    """Write a job folder (see the module docstring) for the views ``frames`` under ``envmap``.

    Args:
        job_dir: The (empty or new) job folder.
        frames: The views' G-buffers, in order.
        envmap: Linear world map (relight3d's convention); encoded in each frame's camera frame at height x width.
        seeds: One per view; a clip runs with its first view's seed.
        height, width, num_steps, guidance: DR's --height, --width, --num_steps, --guidance.
        frames_per_clip: Views per DR video.
        convention: Handedness of the lighting images (``"cosmos"`` or ``"svd"``).

    Raises:
        ValueError: frames_per_clip out of 1..121, or a camera with a reflection (write_gbuffer_frames).
    """
    from PIL import Image

    if not 1 <= frames_per_clip <= VIDEO_FRAME_COUNTS[-1]:
        raise ValueError(f"frames_per_clip must be 1 to {VIDEO_FRAME_COUNTS[-1]}, got {frames_per_clip}")
    job_dir = Path(job_dir)
    groups = [list(range(i, min(i + frames_per_clip, len(frames)))) for i in range(0, len(frames), frames_per_clip)]
    clips = []
    for k, indices in enumerate(groups):
        clip = JobClip(name=f"clip{k:04d}", frames=len(indices), seed=int(seeds[indices[0]]))
        write_gbuffer_frames(job_dir / GBUFFER_FOLDER, [frames[i] for i in indices], clip_name=clip.name)
        for j, i in enumerate(indices):
            lighting = encode_envmap_for_diffusion_renderer(
                envmap, frames[i].camera_to_world, height, width, convention
            )
            for name, image in zip(LIGHTING_PASSES, (lighting.ldr, lighting.log_hdr, lighting.directions)):
                target = lighting_path(job_dir, clip.name, j, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_to_uint8(image)).save(target, compress_level=1)
        clips.append(clip)
    job = DiffusionRendererJob(
        height=height,
        width=width,
        num_video_frames=video_frame_count(max(c.frames for c in clips)),
        num_steps=num_steps,
        guidance=guidance,
        convention=convention,
        clips=clips,
    )
    (job_dir / JOB_FILE).write_text(json.dumps(job.to_json(), indent=1) + "\n", encoding="utf-8")
    return job


def read_relit_frames(job_dir: Path, job: DiffusionRendererJob) -> Float[Tensor, "n h w 3"]:
    """The relit frames the entry point wrote (sRGB in [0, 1], ``job.height x job.width``), in view order.

    Raises:
        PriorError: one line naming the file: a frame is missing, unreadable or of the wrong size, or a clip folder
            holds more relit frames than the clip has.
    """
    from relight3d.data.validation import inspect_image, read_image_float32

    frames = []
    for clip in job.clips:
        for i in range(clip.frames):
            path = relit_path(job_dir, clip.name, i)
            if not path.is_file():
                raise PriorError(path, "missing: the entry point wrote no such relit frame")
            try:
                info = inspect_image(path)
                pixels = read_image_float32(path, info)
            except DataError as err:
                raise PriorError(err.path, err.problem) from err
            if info.size != (job.width, job.height):
                problem = f"relit frame is {info.size[0]}x{info.size[1]}, expected {job.width}x{job.height} (w x h)"
                raise PriorError(path, problem)
            frames.append(torch.from_numpy(pixels[..., :3].copy()))
        folder = Path(job_dir) / OUTPUT_FOLDER / clip.name
        written = sorted(folder.glob("*.relit.png"))
        if len(written) != clip.frames:
            raise PriorError(folder, f"holds {len(written)} relit frames, the clip has {clip.frames}")
    return torch.stack(frames)


def _resize(images: Float[Tensor, "b h w c"], height: int, width: int) -> Float[Tensor, "b h2 w2 c"]:
    """Antialiased bilinear resize of channel-last images (unchanged when the size matches)."""
    if tuple(images.shape[1:3]) == (height, width):
        return images
    shrink = height < images.shape[1] or width < images.shape[2]
    x = F.interpolate(
        images.permute(0, 3, 1, 2), (height, width), mode="bilinear", align_corners=False, antialias=shrink
    )
    return x.permute(0, 2, 3, 1)


def builtin_channel_layout(latent_channels: int = 4) -> Dict[str, slice]:
    """The builtin UNet's ``conv_in`` channels: name -> slice, in order.

    ``noisy`` is the latent being denoised; each condition is the VAE latent (posterior mean times the scaling
    factor, the space of the noisy latent, as DR encodes its conditions with the video tokenizer) of a 3-channel
    image in [0, 1], composited over white outside the G-buffers' mask (``accumulation``), as
    :mod:`relight3d.data.gbuffer_frames` writes them for DR:

    * ``basecolor``: sRGB-encoded base colour;
    * ``normal``: camera-space normals (OpenGL axes), ``0.5 n + 0.5``;
    * ``depth``: per-view min-max normalised depth, repeated in R, G, B (1 = far and background);
    * ``roughness_metallic``: R = roughness, G = metallic, B = 0 on the object, so that after compositing B is
      ``1 - mask`` (the object's coverage);
    * ``env_ldr``, ``env_log``, ``env_nrm``: the target map in the view's camera frame
      (:func:`~relight3d.lighting.diffusion_renderer_encodings.encode_envmap_for_diffusion_renderer`) at the model's
      square resolution.

    Example:
        >>> layout = builtin_channel_layout()
        >>> layout["noisy"], layout["env_nrm"]
        (slice(0, 4, None), slice(28, 32, None))
    """
    names = ("noisy", *BUILTIN_CONDITIONS)
    return {name: slice(i * latent_channels, (i + 1) * latent_channels) for i, name in enumerate(names)}


def builtin_gbuffer_images(frames: Sequence[GBufferFrame]) -> Float[Tensor, "b h w 12"]:
    """The builtin model's four G-buffer images per view, channel-last and concatenated in
    :data:`BUILTIN_CONDITIONS` order (see :func:`builtin_channel_layout`), in [0, 1] on the CPU."""
    views = []
    for frame in frames:
        passes, _, _ = encode_gbuffer_frame(frame)
        mask = frame.mask.detach().float().cpu().clamp(0.0, 1.0)
        packed = torch.cat([passes["roughness"][..., :1], passes["metallic"][..., :1], 1.0 - mask], dim=-1)
        views.append(torch.cat([passes["basecolor"], passes["normal"], passes["depth"], packed], dim=-1))
    return torch.stack(views)


def builtin_condition_latents(
    components: DiffusionComponents,
    gbuffer_images: Float[Tensor, "b 12 r r"],
    envmap: Float[Tensor, "H W 3"],
    cameras: Float[Tensor, "b 3 4"],
    convention: Convention = "cosmos",
) -> Float[Tensor, "b c h w"]:
    """The builtin model's seven condition latents (:func:`builtin_channel_layout`), concatenated: the squared
    G-buffer images (:func:`builtin_gbuffer_images`, channel-first at the model's side ``r``) and the world map
    ``envmap`` encoded in each camera's frame at ``r x r``, each encoded by the VAE. Inference
    (:meth:`BuiltinDiffusionRenderer.condition`) and training (``relight3d train-prior gbuffer``) both call this."""
    side = int(gbuffer_images.shape[-1])
    lighting = []
    for c2w in cameras:
        light = encode_envmap_for_diffusion_renderer(envmap, c2w, side, side, convention)
        lighting.append(torch.cat([light.ldr, light.log_hdr, light.directions], dim=-1))
    light_images = torch.stack(lighting).permute(0, 3, 1, 2).to(gbuffer_images)
    images = torch.cat([gbuffer_images, light_images], dim=1)
    b = images.shape[0]
    latents = components.encode_images(images.reshape(b * len(BUILTIN_CONDITIONS), 3, side, side))
    return latents.reshape(b, -1, *latents.shape[-2:])


def tiny_builtin_folder(path: Union[str, Path], seed: int = 0) -> Path:
    """Write a tiny random builtin model (``unet/`` taking :data:`BUILTIN_IN_CHANNELS`, ``vae/``, ``scheduler/``) with
    ``save_pretrained``, for tests and for trying training code; the same ``seed`` gives the same weights.

    Example:
        >>> folder = tiny_builtin_folder(tmp_path / "builtin")  # doctest: +SKIP
        >>> prior = DiffusionRendererPriorConfig(backend="builtin", model_path=folder).setup()  # doctest: +SKIP
    """
    from relight3d.priors.diffusion.testing import tiny_scheduler, tiny_unet, tiny_vae

    torch.manual_seed(seed)
    parts = DiffusionComponents(unet=tiny_unet(BUILTIN_IN_CHANNELS), vae=tiny_vae(), scheduler=tiny_scheduler())
    return parts.save_pretrained(path)


class BuiltinDiffusionRenderer(LatentDiffusionPrior):
    """relight3d's own G-buffer- and lighting-conditioned latent denoiser (the ``builtin`` backend).

    Sampling, SDEdit refinement, score distillation, several devices and per-view seeds are the shared
    :class:`~relight3d.priors.latent_diffusion.LatentDiffusionPrior`'s. What is its own: the conditioning
    (:func:`builtin_channel_layout`), passed through the shared code as the views' ``condition_images`` (the
    G-buffer images, 12 channels, squared like the views), and a context of one zero token for the UNet's
    cross-attention (DR conditions on an all-zero dummy text embedding: ``dataset_inference._prepare_dummy_data_i4``).
    The images themselves only enter ``refine`` as SDEdit's start.
    """

    config: DiffusionRendererPriorConfig
    config_class: ClassVar[Type[LatentDiffusionPriorConfig]] = DiffusionRendererPriorConfig
    component_names: ClassVar[Tuple[str, ...]] = ("unet", "vae")

    def check_components(self, components: DiffusionComponents) -> None:
        unet, latent = components.unet.config, int(components.vae.config.latent_channels)
        expected = latent * (1 + len(BUILTIN_CONDITIONS))
        if int(unet.in_channels) != expected:
            raise WeightsError(
                self.unet_source,
                f"UNet takes {unet.in_channels} input channels; the diffusion-renderer builtin's takes {expected} "
                f"(the noisy latent and the {', '.join(BUILTIN_CONDITIONS)} latents)",
            )
        if int(unet.out_channels) != latent:
            raise WeightsError(self.unet_source, f"UNet predicts {unet.out_channels} channels, the VAE has {latent}")

    def prepare_envmap(self, envmap: Float[Tensor, "H W 3"]) -> Float[Tensor, "H2 W2 3"]:
        return shrink_envmap(envmap, self.config.envmap_height)

    def model_square(self, images: Tensor, masks: Tensor) -> Tuple[Float[Tensor, "b c r r"], Any]:
        """Views as the shared code squares them; the 12-channel G-buffer images (already composited over white)
        padded with white and squared the same way."""
        if images.shape[-1] == 3:
            return super().model_square(images, masks)
        return to_square(images.float(), self.resolution, 1.0)

    def condition(self, replica: DiffusionComponents, chunk: ViewChunk) -> Float[Tensor, "b c h w"]:
        """The seven condition latents of the chunk's views, concatenated in :data:`BUILTIN_CONDITIONS` order."""
        views = chunk.views
        return builtin_condition_latents(
            replica, chunk.condition_images, views.target_envmap, views.cameras, self.config.convention
        )

    def predict_noise(
        self, replica: DiffusionComponents, latents: Tensor, t: Union[int, Tensor], condition: Tensor, scale: float
    ) -> Float[Tensor, "b c h w"]:
        """Conditional branch (and, when ``scale > 1``, an unconditional one with every condition latent zeroed)."""
        context = condition.new_zeros(condition.shape[0], 1, int(replica.unet.config.cross_attention_dim))
        return guided_noise(
            replica.unet, latents, t, scale, (context, context), (torch.zeros_like(condition), condition)
        )


def shrink_envmap(envmap: Float[Tensor, "H W 3"], height: Optional[int]) -> Float[Tensor, "H2 W2 3"]:
    """``envmap`` averaged on the sphere to ``height x 2 height`` when it is taller (else as is)."""
    if height is None or envmap.shape[0] <= height:
        return envmap
    from relight3d.lighting import resize_envmap

    return resize_envmap(envmap, height, 2 * height, method="sphere")


class DiffusionRendererPrior(RelightingPrior):
    """The DiffusionRenderer prior (see the module docstring); ``config.backend`` picks NVIDIA's model from a checkout
    or relight3d's builtin denoiser."""

    config: DiffusionRendererPriorConfig
    required_gbuffers = tuple(GBUFFER_CHANNELS)

    def __init__(
        self,
        config: DiffusionRendererPriorConfig,
        device: Union[str, torch.device] = "cpu",
        components: Union[None, DiffusionComponents, Dict[str, Any]] = None,
    ) -> None:
        super().__init__(config, device)
        name = type(config).__name__
        self._builtin: Optional[BuiltinDiffusionRenderer] = None
        if config.backend == "builtin":
            self._builtin = BuiltinDiffusionRenderer(config, device, components)
            self._device = self._builtin.device
            return
        if config.backend != "checkout":
            raise ConfigError(f"{name}.backend", f"unknown backend {config.backend!r} (checkout or builtin)")
        if components is not None:
            raise ConfigError(f"{name}.backend", "components are the builtin backend's; set backend=builtin")
        if config.checkout is None:
            raise ConfigError(f"{name}.checkout", "not set (your clone of nv-tlabs/cosmos1-diffusion-renderer)")
        if config.model_path is not None:
            raise ConfigError(f"{name}.model_path", "is the builtin backend's weights; set backend=builtin to use it")
        for option, value in (("height", config.height), ("width", config.width)):
            if value <= 0 or value % 16:
                raise ConfigError(f"{name}.{option}", f"{value} is not a positive multiple of 16 (DR's tokenizer)")
        if not 1 <= config.frames_per_clip <= VIDEO_FRAME_COUNTS[-1]:
            raise ConfigError(
                f"{name}.frames_per_clip", f"{config.frames_per_clip} is not in 1..{VIDEO_FRAME_COUNTS[-1]}"
            )
        if config.timeout_s <= 0:
            raise ConfigError(f"{name}.timeout_s", f"{config.timeout_s} is not positive")

    @classmethod
    def from_components(
        cls,
        config: Optional[DiffusionRendererPriorConfig] = None,
        device: Union[str, torch.device] = "cpu",
        **parts: Any,
    ) -> "DiffusionRendererPrior":
        """The builtin backend from component objects (``unet``, ``vae``, ``scheduler``) instead of ``model_path``."""
        config = config if config is not None else DiffusionRendererPriorConfig(backend="builtin")
        return cls(config, device=device, components=parts)

    # --- description ---------------------------------------------------------------------------------------------
    @property
    def builtin(self) -> Optional[BuiltinDiffusionRenderer]:
        """The builtin denoiser (None for the checkout backend)."""
        return self._builtin

    @property
    def error_path(self) -> Union[str, Path]:
        if self._builtin is not None:
            return self._builtin.error_path
        return self.config.checkout if self.config.checkout is not None else type(self.config).__name__

    @property
    def resolution(self) -> Optional[int]:
        """The builtin model's square side; None for the checkout backend (it works at height x width)."""
        return self._builtin.resolution if self._builtin is not None else None

    @property
    def supports_sds(self) -> bool:
        return self._builtin is not None

    # --- the contract --------------------------------------------------------------------------------------------
    def relight_views(self, views: PriorViews) -> Float[Tensor, "b h w 3"]:
        """The views rendered by DiffusionRenderer from their G-buffers under the target map (the images are not
        used, except outside the masks)."""
        frames = gbuffer_frames(views, self.error_path)
        if self._builtin is not None:
            return self._builtin.relight_views(self._with_gbuffer_images(views, frames))
        return self._relight_with_checkout(views, frames)

    def refine_views(self, views: PriorViews, t_star: float) -> Float[Tensor, "b h w 3"]:
        """builtin: SDEdit from the image latent (see LatentDiffusionPrior). checkout: DR's forward renderer has no
        noising of an input image, so ``t_star`` blends the images towards the relit views
        (``(1 - t) images + t relit``, ``t`` clipped to [0, 1]; 0 returns the images without running DR)."""
        if self._builtin is not None:
            frames = gbuffer_frames(views, self.error_path)
            return self._builtin.refine_views(self._with_gbuffer_images(views, frames), t_star)
        weight = min(max(float(t_star), 0.0), 1.0)
        if weight == 0.0:
            return views.images.detach().float().clone()
        relit = self.relight_views(views)
        return torch.lerp(views.images.detach().float(), relit, weight)

    def sds_views(self, views: PriorViews, guidance_scale: Optional[float]) -> Dict[str, Tensor]:
        """builtin only: the shared score-distillation loss under this prior's conditioning."""
        if self._builtin is None:
            return super().sds_views(views, guidance_scale)
        frames = gbuffer_frames(views, self.error_path)
        return self._builtin.sds_views(self._with_gbuffer_images(views, frames), guidance_scale)

    def _with_gbuffer_images(self, views: PriorViews, frames: Sequence[GBufferFrame]) -> PriorViews:
        images = builtin_gbuffer_images(frames).to(views.images.device)
        return replace(views, condition_images=images)

    # --- the checkout backend ------------------------------------------------------------------------------------
    def checkout_paths(self) -> Dict[str, Path]:
        """``checkout``, ``checkpoint_dir``, ``entry_point`` and ``python``, resolved (not checked)."""
        c = self.config
        checkout = Path(c.checkout).expanduser().resolve()
        checkpoints = Path(c.checkpoint_dir).expanduser() if c.checkpoint_dir is not None else checkout / "checkpoints"
        entry = Path(c.entry_point).expanduser() if c.entry_point is not None else ADAPTER
        python = Path(c.python).expanduser() if c.python is not None else Path(sys.executable)
        return {
            "checkout": checkout,
            "checkpoint_dir": checkpoints.resolve(),
            "entry_point": entry.resolve(),
            "python": python,
        }

    def check_checkout(self) -> Dict[str, Path]:
        """:meth:`checkout_paths`, after checking that every file a run needs is there.

        Raises:
            PriorError: one line naming the first missing file or folder.
        """
        paths = self.checkout_paths()
        checkout, checkpoints = paths["checkout"], paths["checkpoint_dir"]
        if not checkout.is_dir():
            raise PriorError(checkout, "DiffusionRenderer checkout not found (checkout)")
        needed = [
            (paths["entry_point"], "entry point not found (entry_point)"),
            (checkout / PIPELINE_CONFIG, "not found: is checkout a clone of nv-tlabs/cosmos1-diffusion-renderer?"),
            (checkpoints / FORWARD_CHECKPOINT / "model.pt", "not found: DR's forward model weights (see its README)"),
            *((checkpoints / TOKENIZER_DIR / f, "not found: a file of DR's video tokenizer") for f in TOKENIZER_FILES),
        ]
        for path, problem in needed:
            if not path.is_file():
                raise PriorError(path, problem)
        python = paths["python"]
        found = shutil.which(str(python)) if not python.is_file() else str(python)
        if found is None:
            raise PriorError(python, "Python interpreter not found (python: the DiffusionRenderer environment's)")
        paths["python"] = Path(found)
        return paths

    def checkout_seeds(self, generator: GeneratorLike, batch: int) -> List[int]:
        """One DR seed per view, drawn from the view's generator (:func:`~relight3d.priors.base.make_generators`)."""
        generators = make_generators(generator, batch, self.config.seed)
        return [int(torch.randint(0, 2**31 - 1, (1,), generator=g)) for g in generators]

    def _relight_with_checkout(self, views: PriorViews, frames: List[GBufferFrame]) -> Float[Tensor, "b h w 3"]:
        c = self.config
        paths = self.check_checkout()
        seeds = self.checkout_seeds(views.generator, views.batch_size)
        envmap = shrink_envmap(views.target_envmap.detach().float().cpu().clamp_min(0.0), c.envmap_height)
        if c.work_dir is not None:
            Path(c.work_dir).mkdir(parents=True, exist_ok=True)
        job_dir = Path(tempfile.mkdtemp(prefix="diffusion-renderer-job-", dir=c.work_dir)).resolve()
        try:
            try:
                job = write_job(
                    job_dir, frames, envmap, seeds, c.height, c.width, c.num_inference_steps, c.guidance,
                    c.frames_per_clip, c.convention,
                )  # fmt: skip
            except ValueError as err:  # a camera with a reflection (write_gbuffer_frames)
                raise PriorError(self.error_path, f"cannot write the job: {err}") from err
            self._run_entry_point(paths, job_dir)
            relit = read_relit_frames(job_dir, job)
        finally:
            if c.work_dir is None:
                shutil.rmtree(job_dir, ignore_errors=True)
        images = views.images.detach().float()
        relit = _resize(relit, images.shape[1], images.shape[2]).clamp(0.0, 1.0).to(images.device)
        return composite(relit, views.masks.detach().float().clamp(0.0, 1.0).to(images.device), images)

    def _run_entry_point(self, paths: Dict[str, Path], job_dir: Path) -> None:
        """Run the entry point on ``job_dir`` in the checkout (working dir, PYTHONPATH); its output goes to
        ``entry_point.log``.

        Raises:
            PriorError: a non-zero exit (with the last line of its stderr), a timeout, or no interpreter.
        """
        c, checkout, entry = self.config, paths["checkout"], paths["entry_point"]
        command = [
            str(paths["python"]), str(entry), "--job", str(job_dir), "--checkout", str(checkout),
            "--checkpoint_dir", str(paths["checkpoint_dir"]), *(["--offload"] if c.offload else []),
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), env.get("PYTHONPATH", "")) if p)
        try:
            result = subprocess.run(
                command, cwd=checkout, env=env, capture_output=True, text=True, errors="replace", timeout=c.timeout_s
            )
        except subprocess.TimeoutExpired as err:
            raise PriorError(entry, f"did not finish within {c.timeout_s:g} s (timeout_s)") from err
        except OSError as err:  # the interpreter cannot be started
            raise PriorError(paths["python"], f"cannot run the entry point: {err.strerror or err}") from err
        log = f"$ {' '.join(command)}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        (job_dir / LOG_FILE).write_text(log, encoding="utf-8")
        if result.returncode != 0:
            lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
            last = lines[-1] if lines else "no output"
            raise PriorError(entry, f"exited with code {result.returncode}: {last}")
