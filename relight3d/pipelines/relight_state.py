"""What a :class:`~relight3d.pipelines.relighting.RelightingPipeline` computes and keeps while it runs.

The pipeline is an ``nn.Module``, whose attribute rules would register a prior or an LPIPS network as submodules
(their weights would then land in the pipeline's checkpoints) and keep tensors out of plain attributes. Everything
here is plain data in one :class:`RelightingState`, which the pipeline holds as ``pipeline.state``: a dataclass is
not a module, so holding it changes nothing in ``state_dict()``. Nothing in it is saved with a checkpoint; a resumed
run rebuilds it (the stage-1 views come back from their cache on disk).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from relight3d.priors.base import RelightingPrior

NO_SOURCE_LIGHT = "none (the prior needs no source light)"
"""What :attr:`RelightingState.source_origin` says until a source light is chosen."""


@dataclass
class StageTimings:
    """Wall time and work of the two stages in this process (for the speed figures of ``relight3d relight``)."""

    stage1_seconds: float = 0.0
    """Seconds spent relighting training views with the prior (0 when the stage-1 cache was reused)."""
    stage1_views: int = 0
    """Training views relit by the prior."""
    stage2_seconds: float = 0.0
    """Seconds between the starts of consecutive stage-2 iterations (render, prior, backward), summed."""
    stage2_iters: int = 0
    """Stage-2 iterations timed (one fewer than run: the last has no successor)."""
    stage2_last_start: Optional[float] = None
    """``time.perf_counter()`` at the start of the latest stage-2 iteration."""

    def rates(self) -> Dict[str, float]:
        """``stage1_views_per_second`` and ``stage2_iterations_per_second``, for the stages that did work."""
        rates = {}
        if self.stage1_views:
            rates["stage1_views_per_second"] = self.stage1_views / max(self.stage1_seconds, 1e-9)
        if self.stage2_iters:
            rates["stage2_iterations_per_second"] = self.stage2_iters / max(self.stage2_seconds, 1e-9)
        return rates


@dataclass
class RelightingState:
    """The relighting pipeline's run-time state: built objects, caches and timings (never checkpointed)."""

    generator: torch.Generator = field(default_factory=torch.Generator)
    """Random source of the prior's sampling and of stage 2's view order (seeded from the config's ``seed``)."""
    field_digest: Optional[str] = None
    """Hash of the trained field's weights (keys the on-disk field cache); None when no field was loaded."""
    base_dir: Optional[Path] = None
    """The trainer's run folder, once the trainer has announced it (the stage-1 cache goes below it)."""
    prior: Optional["RelightingPrior"] = None
    """The 2D prior, built on first use (its weights are not part of the pipeline's checkpoints)."""
    stage1_done: bool = False
    """Whether the training images have been replaced by their relit versions in this process."""
    original_images: Optional[Float[Tensor, "n h w 3"]] = None
    """The training images as the field was trained on them (before stage 1 replaced them), on the CPU."""
    gbuffers: Optional[Dict[str, Tensor]] = None
    """The training views' G-buffers, ``[n, h, w, c]`` each (see :mod:`relight3d.pipelines.relight_field`)."""
    material_origin: Optional[str] = None
    """How the field's material head was fitted (its targets and RMS error), when this run fitted it."""
    source_origin: str = NO_SOURCE_LIGHT
    """Where the source light came from: ``"given: ..."``, ``"recorded by the data: ..."`` or ``"estimated ..."``."""
    timings: StageTimings = field(default_factory=StageTimings)
    """Wall time and work of the two stages."""
    memos: Dict[str, Tuple[Any, Any]] = field(default_factory=dict)
    """``name -> (key, value)`` of :meth:`memo`."""

    def memo(self, name: str, key: Any, build: Callable[[], Any]) -> Any:
        """``build()``, kept under ``name`` until ``key`` changes (the maps are read once although stage 2 asks for
        them every iteration; the shadows are traced once per field; stage 2's LPIPS network is loaded once)."""
        kept = self.memos.get(name)
        if kept is None or kept[0] != key:
            kept = self.memos[name] = (key, build())
        return kept[1]
