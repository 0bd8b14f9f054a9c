"""nerfstudio's Trainer with atomic checkpoints, safe resumption, checks before training and one-line errors.

Under ``ns-train`` (nerfstudio's ``main`` -> ``launch`` -> ``train_loop`` -> ``trainer.setup()`` / ``train()``) any
:class:`~relight3d.errors.Relight3dError` raised while the config is saved, the pipeline is built or the model
trains is printed as one line, ``relight3d: error: <message>``, and the process exits with code 2 (a
:class:`Relight3dExit`). Called from Python through :func:`relight3d.engine.run.train`, the same errors are raised
as they are, for the ``relight3d`` command or the caller to handle.

Crash safety:

* counts that cannot work (``--max-num-iterations 0``, negative intervals) are refused before anything runs;
* the run folder and the checkpoint folder are created and test-written before training, so a folder that cannot be
  written is reported at once instead of at the first save;
* checkpoints are written to a temporary file beside the checkpoint folder, fsynced and renamed into place: a crash
  leaves the previous checkpoint or the new one, never a partial ``step-*.ckpt``; temporary files left by a killed
  run are removed when a run starts or resumes from that folder;
* checkpoints hold no pickled code and load with ``torch.load(weights_only=True)``; a checkpoint that is truncated,
  not a torch file, holds pickled objects or belongs to another method is a one-line error.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Type

import numpy as np
import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from relight3d.errors import ConfigError, DataError, Relight3dError, one_line, reading

CHECKPOINT_PATTERN = re.compile(r"^step-(\d{9})\.ckpt$")
TEMPORARY_PATTERN = re.compile(r"^\.(?P<folder>.+)\.step-\d{9}\.ckpt(?:\.(?P<pid>\d+))?\.tmp$")
"""Names of the temporary files :func:`save_atomically` writes (``.<folder>.step-<step>.ckpt.<pid>.tmp``)."""


def latest_checkpoint(load_dir: Path) -> Optional[Path]:
    """The checkpoint with the highest step in ``load_dir`` (only complete ``step-XXXXXXXXX.ckpt`` files count)."""
    if not load_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in load_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def to_builtin(obj: Any) -> Any:
    """Replace numpy scalars (e.g. learning rates computed by nerfstudio's schedulers) with Python numbers and
    numpy arrays with tensors.

    torch's safe ``weights_only`` loading rejects numpy objects, so checkpoints must not contain any.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_builtin(v) for v in obj)
    return obj


def temporary_path(path: Path) -> Path:
    """Where :func:`save_atomically` writes ``path`` first: in the folder above it (so nothing half-written ever
    appears among the checkpoints), named after the folder, the file and this process."""
    return path.parent.parent / f".{path.parent.name}.{path.name}.{os.getpid()}.tmp"


def save_atomically(state: Dict[str, Any], path: Path) -> None:
    """Write ``state`` with torch.save to a temporary file, fsync it, rename it to ``path`` and fsync the folder.

    A crash leaves either the previous file or the complete new one, never a truncated checkpoint; the temporary
    file a crash leaves is removed by :func:`remove_stale_temporaries` when a run starts.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(to_builtin(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (not possible on every platform and file system)
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has not saved anything yet when it cleans up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_temporaries(checkpoint_dir: Path) -> List[Path]:
    """Delete the temporary files that a killed run left beside ``checkpoint_dir``; returns what was removed.

    Only files named as :func:`save_atomically` names them for this folder count, and a file whose writer (the
    process id in its name) is still running is kept.
    """
    parent = checkpoint_dir.parent
    if not parent.is_dir():
        return []
    removed = []
    for p in parent.iterdir():
        m = TEMPORARY_PATTERN.match(p.name)
        if m is None or m.group("folder") != checkpoint_dir.name or not p.is_file():
            continue
        if m.group("pid") is not None and _process_alive(int(m.group("pid"))):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _checkpoint_kind(path: Path) -> str:
    """What the file looks like, for the message when torch cannot read it."""
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    return "a torch checkpoint (truncated or damaged)" if zipped else "a torch checkpoint (it is not a zip archive)"


def load_checkpoint_file(path: Path) -> Dict[str, Any]:
    """Load a nerfstudio checkpoint safely (``weights_only``): no code in the file runs.

    Returns:
        The checkpoint: a dict with an integer ``"step"`` and the ``"pipeline"`` state dict (tensors by name).

    Raises:
        DataError: (one line) the file is missing, empty, truncated or not a torch checkpoint, holds pickled objects
            other than weights (refused unexecuted), or is not a nerfstudio checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    if path.stat().st_size == 0:
        raise DataError(path, "empty checkpoint file (an interrupted save?)")
    # Arbitrary bytes make torch's readers fail in many ways (EOFError, RuntimeError from the zip reader, IndexError /
    # KeyError / UnicodeDecodeError from the unpickler...): ``reading`` turns each into one line naming the file.
    with reading(path, _checkpoint_kind(path)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "Weights only load failed" not in str(err):
                raise  # a damaged file: reading() reports it
            found = re.search(r"GLOBAL ([\w.]+)", str(err))
            what = f" ({found.group(1)})" if found else ""
            problem = f"refused: the checkpoint holds pickled Python objects{what}, not only weights; nothing in it ran"
            raise DataError(path, problem) from err
    if not isinstance(state, dict) or not isinstance(state.get("pipeline"), dict):
        raise DataError(path, "not a nerfstudio checkpoint (no 'pipeline' weights)")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["pipeline"].items()):
        raise DataError(path, "not a nerfstudio checkpoint ('pipeline' is not a state dict of tensors)")
    if not isinstance(state.get("step"), int) or isinstance(state["step"], bool) or state["step"] < 0:
        raise DataError(path, "not a nerfstudio checkpoint (no training 'step')")
    return state


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def check_model_weights(model: torch.nn.Module, pipeline_state: Dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose model weights are not exactly ``model``'s.

    nerfstudio's ``Pipeline.load_state_dict`` falls back to a non-strict load, so the checkpoint of another method
    would load nothing and train or render an untrained model without a word.

    Raises:
        DataError: (one line) weights of the model are missing from the checkpoint, or it holds unknown ones.
    """
    got = {_strip(k, "module.") for k in pipeline_state}  # (DDP prefixes, as nerfstudio strips them)
    got = {_strip(k[len("_model.") :], "module.") for k in got if k.startswith("_model.")}
    expected = set(model.state_dict())
    missing, unknown = sorted(expected - got), sorted(got - expected)
    if missing or unknown:
        parts = [f"{len(missing)} of this model's weights missing, e.g. {missing[0]!r}"] if missing else []
        parts += [f"{len(unknown)} unknown weights, e.g. {unknown[0]!r}"] if unknown else []
        raise DataError(path, f"checkpoint does not match this method ({'; '.join(parts)}); is it another method's?")


def ensure_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and write and delete a small file in it.

    Raises:
        DataError: ``<folder>: <what> is not writable (<reason>)``.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".relight3d-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or one_line(err)
        if err.filename is not None and Path(err.filename) != folder:
            reason += f": {err.filename}"
        raise DataError(folder, f"{what} is not writable ({reason})") from err


COUNT_OPTIONS = {
    "max_num_iterations": ("--max-num-iterations", 1),
    "steps_per_save": ("--steps-per-save", 0),
    "steps_per_eval_batch": ("--steps-per-eval-batch", 0),
    "steps_per_eval_image": ("--steps-per-eval-image", 0),
    "steps_per_eval_all_images": ("--steps-per-eval-all-images", 0),
}
"""Trainer counts: config attribute -> (ns-train option, smallest accepted value; 0 means "never")."""


def check_trainer_config(config: TrainerConfig, check_folders: bool = True) -> None:
    """Refuse a trainer config that cannot work, before anything is written or trained.

    Raises:
        ConfigError: a count or interval below its minimum (see :data:`COUNT_OPTIONS`), a negative ``--load-step``,
            or fewer than one device or machine.
        DataError: the run folder or the checkpoint folder cannot be written (when ``check_folders``).
    """
    checks = [(option, getattr(config, name), low) for name, (option, low) in COUNT_OPTIONS.items()]
    checks += [
        ("--logging.steps-per-log", config.logging.steps_per_log, 1),
        ("--machine.num-devices", config.machine.num_devices, 1),
        ("--machine.num-machines", config.machine.num_machines, 1),
    ]
    if config.load_step is not None:
        checks.append(("--load-step", config.load_step, 0))
    for option, value, low in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            kind = "a positive integer" if low == 1 else "an integer >= 0 (0: never)"
            raise ConfigError(option, f"must be {kind}, got {value!r}")
    if check_folders:
        base_dir = config.get_base_dir()
        ensure_writable(base_dir, "the run folder")
        ensure_writable(config.get_checkpoint_dir(), "the checkpoint folder")


class Relight3dExit(SystemExit):
    """Exit with code 2 after printing a :class:`~relight3d.errors.Relight3dError` as one line (``ns-train``).

    ``str()`` is the printed line, so tests can match it as they match ``SystemExit("...")``.
    """

    def __init__(self, err: Relight3dError) -> None:
        super().__init__(2)
        self.error = err
        self.line = f"relight3d: error: {err}"

    def __str__(self) -> str:
        return self.line


@contextmanager
def exit_on_error(enabled: bool = True) -> Iterator[None]:
    """Turn a :class:`~relight3d.errors.Relight3dError` into one line on stderr and exit code 2 (when enabled).

    Raising :class:`Relight3dExit` (a ``SystemExit``) ends the process quietly with code 2 from the main process;
    in a ``torch.multiprocessing`` worker (multi-GPU ``ns-train``) the worker exits with code 2 after printing, and
    nerfstudio's launcher stops the others.
    """
    try:
        yield
    except Relight3dError as err:
        if not enabled:
            raise
        exit_ = Relight3dExit(err)
        print(exit_.line, file=sys.stderr, flush=True)
        raise exit_ from None


@dataclass
class Relight3DTrainerConfig(TrainerConfig):
    """Trainer settings (nerfstudio's, with atomic checkpoints and checks before training)."""

    _target: Type = field(default_factory=lambda: Relight3DTrainer)
    """Trainer class to instantiate."""

    def __post_init__(self) -> None:
        # ns-train's --load-config is read by nerfstudio with PyYAML's full loader, which runs any code the file
        # names. tyro builds this config before that, so a hostile file is refused here with one line.
        if self.load_config is not None:
            from relight3d.engine.safe_config import load_run_config

            with exit_on_error():
                load_run_config(self.load_config)

    def save_config(self) -> None:
        """Check the config (counts, writable folders), then write ``config.yml`` as nerfstudio does.

        ``ns-train`` calls this before it starts training; a problem ends it with one line and exit code 2.
        """
        with exit_on_error():
            check_trainer_config(self)
        super().save_config()


class Relight3DTrainer(Trainer):
    """Trainer that checks before it trains, writes checkpoints atomically and resumes from the latest one.

    Attributes:
        exit_on_error: print a :class:`~relight3d.errors.Relight3dError` from ``setup`` / ``train`` as one line and
            exit with code 2 (``ns-train``); :func:`relight3d.engine.run.train` sets it to False to get the error.
    """

    config: Relight3DTrainerConfig
    exit_on_error: bool = True

    def __init__(self, config: TrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        # nerfstudio builds its scaler with the deprecated torch.cuda.amp.GradScaler: a FutureWarning on stderr that
        # the user cannot act on (and that would precede a bad-input error's one line).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler", category=FutureWarning)
            super().__init__(config, local_rank, world_size)

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """Check the config and folders, remove stale temporary checkpoints, then nerfstudio's setup."""
        with exit_on_error(self.exit_on_error):
            check_trainer_config(self.config)
            stale = remove_stale_temporaries(self.checkpoint_dir)
            if self.config.load_dir is not None:
                stale += remove_stale_temporaries(Path(self.config.load_dir))
            for p in stale:
                CONSOLE.print(f"Removed {p} (left by an interrupted checkpoint save)")
            super().setup(test_mode=test_mode)

    def train(self) -> None:
        """nerfstudio's training loop, with relight3d errors as one line."""
        with exit_on_error(self.exit_on_error):
            super().train()

    def save_checkpoint(self, step: int) -> None:
        """Write ``step-<step>.ckpt`` atomically, then (``save_only_latest_checkpoint``) delete older ones."""
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

    def _checkpoint_to_load(self) -> Optional[Path]:
        load_dir, load_checkpoint = self.config.load_dir, self.config.load_checkpoint
        if load_dir is not None:
            load_dir = Path(load_dir)
            if not load_dir.is_dir():
                raise DataError(load_dir, "--load-dir: checkpoint folder not found")
            if self.config.load_step is not None:
                return load_dir / f"step-{self.config.load_step:09d}.ckpt"
            found = latest_checkpoint(load_dir)
            if found is None:
                raise DataError(load_dir, "no step-*.ckpt checkpoint in this folder")
            return found
        return None if load_checkpoint is None else Path(load_checkpoint)

    def _load_checkpoint(self) -> None:
        path = self._checkpoint_to_load()
        if path is None:
            CONSOLE.print("No checkpoint to load, so training from scratch.")
            return
        state = load_checkpoint_file(path)
        for key in ("optimizers", "scalers"):
            if not isinstance(state.get(key), dict):
                raise DataError(path, f"not a nerfstudio training checkpoint (no '{key}' state)")
        check_model_weights(self.pipeline.model, state["pipeline"], path)
        try:
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
            self.optimizers.load_optimizers(state["optimizers"])
            if isinstance(state.get("schedulers"), dict) and self.config.load_scheduler:
                self.optimizers.load_schedulers(state["schedulers"])
            self.grad_scaler.load_state_dict(state["scalers"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise DataError(path, f"checkpoint does not match this method ({one_line(err)})") from err
        self._start_step = state["step"] + 1
        CONSOLE.print(f"Resumed from {path} (step {state['step']})")
