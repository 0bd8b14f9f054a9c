"""nerfstudio's Trainer with atomic checkpoints, robust resumption and one-line errors for bad data."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Type

import numpy as np
import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from relight3d.data.errors import DataError

CHECKPOINT_PATTERN = re.compile(r"^step-(\d{9})\.ckpt$")


def latest_checkpoint(load_dir: Path) -> Optional[Path]:
    """The checkpoint with the highest step in ``load_dir`` (only complete ``step-XXXXXXXXX.ckpt`` files count)."""
    if not load_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in load_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def to_builtin(obj: Any) -> Any:
    """Replace numpy scalars (e.g. learning rates computed by nerfstudio's schedulers) with Python numbers.

    torch's safe ``weights_only`` loading rejects numpy scalars, so checkpoints must not contain any.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_builtin(v) for v in obj)
    return obj


def save_atomically(state: Dict[str, Any], path: Path) -> None:
    """Write ``state`` with torch.save to a temporary file beside ``path``, fsync it, then rename it into place.

    A crash leaves either the previous file or the complete new one, never a truncated checkpoint. The temporary
    file lives in the parent folder so that nothing half-written ever appears among the checkpoints.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent.parent / f".{path.parent.name}.{path.name}.tmp"
    with open(tmp, "wb") as f:
        torch.save(to_builtin(state), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint_file(path: Path) -> Dict[str, Any]:
    """Load a checkpoint safely (``weights_only``), with a one-line error for missing or unreadable files."""
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise DataError(path, f"cannot load checkpoint ({err.__class__.__name__}: {first_line})") from None


@dataclass
class Relight3DTrainerConfig(TrainerConfig):
    """Trainer settings (nerfstudio's, with atomic checkpoints)."""

    _target: Type = field(default_factory=lambda: Relight3DTrainer)
    """Trainer class to instantiate."""


class Relight3DTrainer(Trainer):
    """Trainer whose checkpoints are written atomically and that resumes from the latest complete one."""

    config: Relight3DTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        try:
            super().setup(test_mode=test_mode)
        except DataError as err:
            raise SystemExit(f"relight3d: error: {err}") from None

    def save_checkpoint(self, step: int) -> None:
        ckpt_path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        save_atomically(state, ckpt_path)
        if self.config.save_only_latest_checkpoint:
            for f in self.checkpoint_dir.glob("step-*.ckpt"):
                if f != ckpt_path:
                    f.unlink()

    def _load_checkpoint(self) -> None:
        load_dir, load_checkpoint = self.config.load_dir, self.config.load_checkpoint
        if load_dir is not None:
            if self.config.load_step is not None:
                path = Path(load_dir) / f"step-{self.config.load_step:09d}.ckpt"
            else:
                found = latest_checkpoint(Path(load_dir))
                if found is None:
                    raise SystemExit(f"relight3d: error: {load_dir}: no step-*.ckpt checkpoint in this folder")
                path = found
        elif load_checkpoint is not None:
            path = Path(load_checkpoint)
        else:
            CONSOLE.print("No checkpoint to load, so training from scratch.")
            return
        try:
            state = load_checkpoint_file(path)
            self._start_step = int(state["step"]) + 1
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
        except DataError as err:
            raise SystemExit(f"relight3d: error: {err}") from None
        except (RuntimeError, KeyError) as err:
            raise SystemExit(
                f"relight3d: error: {path}: checkpoint does not match this method ({str(err).splitlines()[0]})"
            ) from None
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        CONSOLE.print(f"Resumed from {path} (step {state['step']})")
