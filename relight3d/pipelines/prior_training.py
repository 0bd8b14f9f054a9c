"""Training a relighting prior's denoiser with diffusers + accelerate: the loop every ``relight3d train-prior`` model
shares (the models differ only in their :class:`PriorTask`: what a batch holds and how it becomes a loss).

* **One process or many.** The loop runs under accelerate's :class:`~accelerate.Accelerator`: one process as it is,
  several with ``accelerate launch --num_processes N`` or ``torchrun --nproc_per_node N`` (gloo on CPUs, NCCL on
  GPUs; ``ACCELERATE_USE_CPU=yes`` on a CPU machine). Gradients are averaged across processes (DDP), so N processes
  with batch ``b`` take the same step as one process with batch ``N b``.
* **Deterministic batches.** The samples of global step ``s`` (micro-batch ``m`` of it) are fixed by the seed: the
  epoch's permutation of the dataset is drawn from ``seed + epoch``, and global sample ``k`` is ``perm[k % n]``;
  process ``r`` of ``N`` takes its ``b`` consecutive samples of each micro-batch. Each sample's noise and timestep
  come from a generator seeded by ``(seed, k)``. So the run is the same for any number of processes (up to
  floating point) and a resumed run continues exactly where it stopped.
* **EMA, accumulation, precision.** ``ema_decay`` keeps an exponential moving average of the weights
  (diffusers' :class:`~diffusers.training_utils.EMAModel`), which is what is saved for inference;
  ``gradient_accumulation_steps`` micro-batches make one optimiser step; ``mixed_precision`` is ``no`` (fp32, the
  only choice on a CPU), ``fp16`` or ``bf16``.
* **Checkpoints** (every ``checkpoint_every`` steps and at the end) go to ``<output>/checkpoints/step-<NNNNNN>/``:
  the trained network and its EMA (safetensors), the optimiser state and the step (``torch.load(weights_only=True)``
  reads them back). Each is written to a temporary folder and renamed into place, so a crash never leaves half a
  checkpoint; ``resume`` (on by default) continues from the latest one. The inference folder
  ``<output>/model/`` (the EMA weights, in the layout the prior loads with ``from_pretrained``) is replaced the
  same way.
* **Validation images.** At each checkpoint the main process asks the task for
  :meth:`PriorTask.validation_images` with the EMA weights in the network (a few fixed samples sampled with a few
  steps; see :class:`PriorValidationConfig`) and writes them as one grid, ``<output>/validation/step-<NNNNNN>.png``
  (one sample per row, :attr:`PriorTask.validation_columns` images each). They use their own generator, seeded
  with ``seed``, so they neither change the training nor differ between checkpoints except by the weights.
* **Logs**: ``<output>/loss.csv`` (step, loss) and ``<output>/loss.png`` (the curve), and TensorBoard events
  (the loss, the validation grids) in ``<output>/tensorboard/`` when tensorboard is installed.
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from relight3d.errors import ConfigError, DataError
from relight3d.priors.base import to_square

CHECKPOINT = re.compile(r"^step-(\d{6,})$")


@dataclass
class PriorTrainingConfig:
    """Settings of a ``relight3d train-prior`` run (the model's own settings are its task's)."""

    output: Path
    """Run folder: ``model/`` (the trained prior), ``checkpoints/``, ``loss.csv``, ``loss.png``."""
    max_steps: int = 1000
    """Optimiser steps."""
    batch_size: int = 4
    """Samples per process per micro-batch."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimiser step."""
    learning_rate: float = 1e-4
    """AdamW learning rate (constant)."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    ema_decay: float = 0.999
    """Decay of the weights' exponential moving average (0: no EMA, the raw weights are saved)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Autocast precision of the forward pass (``no``: fp32; CPUs support only that)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (and at the last step)."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept."""
    resume: bool = True
    """Continue from the latest checkpoint in ``output`` when there is one."""
    seed: int = 0
    """Seed of the sample order, noise and timesteps."""
    cpu: bool = False
    """Train on the CPU even when a GPU is visible."""


@dataclass
class PriorValidationConfig:
    """The validation images a task draws at each checkpoint (see the module docstring)."""

    steps: int = 0
    """Sampler steps of each validation image (0: no validation images)."""
    samples: int = 4
    """Fixed training samples shown, spread evenly over the dataset (:func:`validation_indices`)."""


class PriorTask(abc.ABC):
    """What one kind of prior trains: its network, its frozen parts, its batches and its loss, and how it saves."""

    validation_columns: ClassVar[int] = 3
    """Images per sample in :meth:`validation_images` (by default: input, prediction, target)."""

    @abc.abstractmethod
    def trained_module(self) -> torch.nn.Module:
        """The network being trained (the denoising UNet)."""

    @abc.abstractmethod
    def dataset_size(self) -> int:
        """Samples in the training set."""

    @abc.abstractmethod
    def loss(self, network: torch.nn.Module, indices: Sequence[int], generators: Sequence[torch.Generator]) -> Tensor:
        """The mean loss of the samples ``indices`` (their per-sample generators given) with ``network`` (the
        prepared, possibly DDP-wrapped trained module); differentiable."""

    @abc.abstractmethod
    def save_model(self, network: torch.nn.Module, folder: Path) -> None:
        """Write the inference folder the prior loads with ``from_pretrained``, with ``network``'s weights."""

    @abc.abstractmethod
    def to(self, device: torch.device) -> None:
        """Move the frozen parts to ``device`` (the trained module is moved by accelerate)."""

    def validation_images(
        self, network: torch.nn.Module, generator: torch.Generator
    ) -> Optional[Float[Tensor, "n h w 3"]]:
        """Images of a few fixed samples made with ``network`` (the unwrapped trained module, holding the EMA
        weights, in evaluation mode, no gradients), :attr:`validation_columns` per sample, in [0, 1], drawn with
        ``generator``; None (the default): no validation images."""
        return None


class UNetForward:
    """A (possibly DDP-wrapped) UNet as the priors' guidance functions call it: callable, with the UNet's ``dtype``
    (a DDP wrapper has none), so training predicts noise through the same function inference does."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype) -> None:
        self.module, self.dtype = module, dtype

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self.module(*args, **kwargs)


def diffusion_draws(
    generators: Sequence[torch.Generator], shape: Sequence[int], num_timesteps: int
) -> Tuple[Int[Tensor, " b"], Float[Tensor, "b ..."], Float[Tensor, " b"]]:
    """The randomness of a denoising loss, each sample's from its own generator in this order: a training timestep
    (uniform in ``0 .. num_timesteps - 1``), the noise (standard normal of ``shape``) and a uniform number in
    [0, 1) (what conditioning dropout compares with its probability). On the CPU."""
    timesteps, noise, uniform = [], [], []
    for g in generators:
        timesteps.append(torch.randint(0, num_timesteps, (1,), generator=g))
        noise.append(torch.randn(tuple(shape), generator=g))
        uniform.append(torch.rand(1, generator=g))
    return torch.cat(timesteps), torch.stack(noise), torch.cat(uniform)


def denoising_loss(
    scheduler: Any, predicted: Float[Tensor, "b c h w"], latents: Tensor, noise: Tensor, timesteps: Tensor
) -> Tensor:
    """The MSE of ``predicted`` to the scheduler's prediction target: the noise (``epsilon``) or the velocity
    (``v_prediction``) of ``latents`` noised with ``noise`` at ``timesteps``."""
    import torch.nn.functional as F

    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return F.mse_loss(predicted.float(), target.float())


def training_prior_config(config: Any, init: Path, resolution: Optional[int], validation_steps: int) -> Any:
    """A prior's config as its training task builds the prior: its model at ``init``, the task's ``resolution`` (when
    given), and ``validation_steps`` sampler steps (the prior samples only the validation images)."""
    config.model_path = Path(init)
    if resolution is not None:
        config.resolution = resolution
    if validation_steps > 0:
        config.num_inference_steps = validation_steps
    return config


def validation_indices(n: int, count: int) -> List[int]:
    """``count`` samples of ``n`` spread evenly from the first to the last (all of them when ``count >= n``).

    Example:
        >>> validation_indices(10, 4)
        [0, 3, 6, 9]
    """
    if count <= 0 or n <= 0:
        return []
    if count >= n:
        return list(range(n))
    if count == 1:
        return [0]
    return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})


def square_images(
    images: Sequence[Float[Tensor, "h w 3"]], side: int, fill: Union[float, Sequence[float]] = 1.0
) -> Float[Tensor, "n side side 3"]:
    """Images of any sizes padded to centred squares with ``fill`` and resized to ``side`` (a validation grid's
    cells), clamped to [0, 1], on the CPU."""
    cells = [to_square(x.detach().float().cpu()[None, ..., :3], side, fill)[0] for x in images]
    return torch.cat(cells).permute(0, 2, 3, 1).clamp(0.0, 1.0)


def image_grid(images: Float[Tensor, "n h w 3"], columns: int) -> Float[Tensor, "H W 3"]:
    """``images`` tiled row by row, ``columns`` per row (the last row padded with black)."""
    n, h, w, _ = images.shape
    rows = max(1, math.ceil(n / max(1, columns)))
    grid = images.new_zeros(rows * columns, h, w, 3)
    grid[:n] = images
    return grid.reshape(rows, columns, h, w, 3).permute(0, 2, 1, 3, 4).reshape(rows * h, columns * w, 3)


def _sample_indices(n: int, seed: int, start: int, count: int) -> List[int]:
    """Global samples ``start .. start + count - 1`` of the deterministic order (module docstring)."""
    out, perms = [], {}
    for k in range(start, start + count):
        epoch = k // n
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        out.append(perms[epoch][k % n])
    return out


def sample_generator(seed: int, k: int) -> torch.Generator:
    """The generator of global sample ``k``'s noise and timestep."""
    return torch.Generator().manual_seed(seed * 1_000_003 + k)


def latest_checkpoint(folder: Path) -> Optional[Path]:
    """The checkpoint of the highest step in ``folder`` (``step-NNNNNN``), or None."""
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT.match(p.name)) and p.is_dir()]
    return max(found)[1] if found else None


def replace_folder(build: Callable[[Path], None], target: Path) -> None:
    """Write a folder with ``build(tmp)`` beside ``target``, then swap it into place (never half written)."""
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    build(tmp)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def _save_state(folder: Path, network: torch.nn.Module, ema: Any, optimizer: Any, step: int) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, folder / "network.safetensors"
    )
    if ema is not None:
        shadow = {f"{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)}
        save_file(shadow, folder / "ema.safetensors")
        torch.save({"optimization_step": ema.optimization_step}, folder / "ema_step.pt")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save({"step": step}, folder / "trainer.pt")


def _load_state(folder: Path, network: torch.nn.Module, ema: Any, optimizer: Any) -> int:
    from safetensors.torch import load_file

    try:
        network.load_state_dict(load_file(folder / "network.safetensors"))
        if ema is not None:
            shadow = load_file(folder / "ema.safetensors")
            for i, p in enumerate(ema.shadow_params):
                p.data.copy_(shadow[f"{i}"].to(p))
            ema.optimization_step = int(torch.load(folder / "ema_step.pt", weights_only=True)["optimization_step"])
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        return int(torch.load(folder / "trainer.pt", weights_only=True)["step"])
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise DataError(folder, f"cannot resume from this checkpoint: {err}") from err


class _TensorBoard:
    """TensorBoard events in ``<output>/tensorboard/`` (nothing when tensorboard is not installed)."""

    def __init__(self, output: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
        else:
            self.writer = SummaryWriter(str(output / "tensorboard"))

    def losses(self, losses: List[tuple]) -> None:
        if self.writer is not None:
            for step, value in losses:
                self.writer.add_scalar("loss", value, step)
            self.writer.flush()

    def image(self, grid: Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image("validation", grid, step, dataformats="HWC")
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _write_validation(
    task: PriorTask, network: torch.nn.Module, step: int, output: Path, seed: int
) -> Optional[Tensor]:
    """The task's validation grid of ``network`` (as it is: the caller put the EMA weights in), written to
    ``<output>/validation/step-<NNNNNN>.png``; None when the task draws none."""
    from PIL import Image

    training = network.training
    network.eval()
    try:
        with torch.no_grad():
            images = task.validation_images(network, torch.Generator().manual_seed(seed))
    finally:
        network.train(training)
    if images is None or images.shape[0] == 0:
        return None
    grid = image_grid(images.detach().float().cpu().clamp(0.0, 1.0), task.validation_columns)
    folder = output / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step-{step:06d}.png"
    tmp = folder / f".{target.name}.tmp.png"
    Image.fromarray((grid * 255.0).round().to(torch.uint8).numpy()).save(tmp)
    os.replace(tmp, target)
    return grid


def _write_curve(output: Path, losses: List[tuple]) -> None:
    with open(output / "loss.csv", "a", encoding="utf-8") as f:
        f.writelines(f"{s},{v:.6g}\n" for s, v in losses)
    rows = [line.split(",") for line in (output / "loss.csv").read_text().splitlines()[1:]]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([int(r[0]) for r in rows], [float(r[1]) for r in rows], lw=0.8)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="relight3d train-prior")
    fig.tight_layout()
    fig.savefig(output / "loss.png", dpi=100)
    plt.close(fig)


def train_prior(task: PriorTask, config: PriorTrainingConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train ``task``'s network (see the module docstring); returns ``{"step", "loss", "model", "main"}`` on every
    process (``main``: whether this is the main process, the only one that writes files and logs).

    Raises:
        ConfigError: a non-positive count or rate.
        DataError: a checkpoint that cannot be resumed.
    """
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    c = config
    for option, value in (("--max-steps", c.max_steps), ("--batch-size", c.batch_size),
                          ("--gradient-accumulation-steps", c.gradient_accumulation_steps),
                          ("--checkpoint-every", c.checkpoint_every)):  # fmt: skip
        if value < 1:
            raise ConfigError(option, f"must be >= 1, got {value}")
    if not (c.learning_rate > 0 and math.isfinite(c.learning_rate)) or not 0.0 <= c.ema_decay < 1.0:
        raise ConfigError("--learning-rate/--ema-decay", "need a learning rate > 0 and 0 <= ema decay < 1")
    accelerator = Accelerator(mixed_precision=c.mixed_precision, cpu=c.cpu)
    world, rank = accelerator.num_processes, accelerator.process_index
    output = Path(c.output)
    network = task.trained_module()
    network.train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)
    ema = EMAModel(network.parameters(), decay=c.ema_decay) if c.ema_decay > 0 else None
    step = 0
    found = latest_checkpoint(output / "checkpoints") if c.resume else None
    if found is not None:
        step = _load_state(found, network, ema, optimizer)
        if accelerator.is_main_process:
            log(f"resumed from {found} (step {step})")
    prepared, optimizer = accelerator.prepare(network, optimizer)
    task.to(accelerator.device)
    if ema is not None:
        ema.to(accelerator.device)
    n, b = task.dataset_size(), c.batch_size
    per_step = b * world * c.gradient_accumulation_steps
    pending: List[tuple] = []
    loss_value = float("nan")
    board = None
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        if step == 0 and (output / "loss.csv").exists():
            (output / "loss.csv").unlink()
        if not (output / "loss.csv").exists():
            (output / "loss.csv").write_text("step,loss\n")
        board = _TensorBoard(output)
    try:
        while step < c.max_steps:
            total = 0.0
            for micro in range(c.gradient_accumulation_steps):
                first = (step * c.gradient_accumulation_steps + micro) * b * world + rank * b
                indices = _sample_indices(n, c.seed, first, b)
                generators = [sample_generator(c.seed, first + j) for j in range(b)]
                sync = micro == c.gradient_accumulation_steps - 1
                context = accelerator.no_sync(prepared) if not sync and world > 1 else contextlib.nullcontext()
                with context, accelerator.autocast():
                    loss = task.loss(prepared, indices, generators) / c.gradient_accumulation_steps
                accelerator.backward(loss)
                total += float(loss.detach())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(accelerator.unwrap_model(prepared).parameters())
            step += 1
            loss_value = float(accelerator.reduce(torch.tensor(total, device=accelerator.device), "mean"))
            pending.append((step, loss_value))
            if step % c.checkpoint_every == 0 or step == c.max_steps:
                _checkpoint(accelerator, task, prepared, ema, optimizer, step, output, c, pending, log, board)
                pending = []
    finally:
        if board is not None:
            board.close()
    if accelerator.is_main_process:
        log(f"trained {step} steps ({per_step} samples per step, {world} process(es)); last loss {loss_value:.4g}")
    return {"step": step, "loss": loss_value, "model": output / "model", "main": accelerator.is_main_process}


def _checkpoint(accelerator, task, prepared, ema, optimizer, step, output, c, pending, log, board) -> None:  # noqa: ANN001
    """Write checkpoint ``step``, the inference folder and the validation images (main process, the last two with
    the EMA weights), then wait for every process."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        network = accelerator.unwrap_model(prepared)
        target = output / "checkpoints" / f"step-{step:06d}"
        replace_folder(lambda tmp: _save_state(tmp, network, ema, optimizer, step), target)
        kept = sorted(p for p in target.parent.iterdir() if CHECKPOINT.match(p.name))
        for old in kept[: -c.keep_checkpoints]:
            shutil.rmtree(old)
        if ema is not None:
            ema.store(network.parameters())
            ema.copy_to(network.parameters())
        try:
            replace_folder(lambda tmp: task.save_model(network, tmp), output / "model")
            grid = _write_validation(task, network, step, output, c.seed)
        finally:
            if ema is not None:
                ema.restore(network.parameters())
        _write_curve(output, pending)
        board.losses(pending)
        if grid is not None:
            board.image(grid, step)
        log(f"step {step}: loss {pending[-1][1]:.4g}; checkpoint {target}")
    accelerator.wait_for_everyone()


__all__ = [
    "PriorTask",
    "PriorTrainingConfig",
    "PriorValidationConfig",
    "UNetForward",
    "denoising_loss",
    "diffusion_draws",
    "image_grid",
    "latest_checkpoint",
    "replace_folder",
    "sample_generator",
    "square_images",
    "train_prior",
    "training_prior_config",
    "validation_indices",
]
