"""``relight3d export gbuffers``: any view's G-buffers of a trained field, in DiffusionRenderer's ``gbuffer_frames``
layout, so that DiffusionRenderer's forward renderer (or anything reading that layout) can take them.

For each camera of the chosen set (the field's training views, its held-out test views, or an orbit matched to the
training cameras), the frozen field is rendered and one :class:`~relight3d.data.gbuffer_frames.GBufferFrame` is made:

* ``normals``: the normals relight3d's priors shade with: the field's density-gradient and depth normals combined
  and, where the view has the training views' size, averaged across the training views
  (:func:`relight3d.priors.normals.fuse_view_normals`; ``"multiview_normals"``);
* ``depth``: the rendered distance along each pixel's ray; ``mask``: the accumulation;
* ``base_color`` (linear), ``roughness``, ``metallic``: the field's material head at each pixel's surface point,
  fitted first when the run's checkpoint has none (:mod:`~relight3d.pipelines.relight_material`: the physical
  prior's albedo by default, or DiffusionRenderer inverse-renderer frames of the training views).

The frames are written by :func:`relight3d.data.gbuffer_frames.write_gbuffer_frames` with the encodings documented
there (camera-space OpenGL normals ``0.5 n + 0.5``, per-frame min-max depth, sRGB base colour, white background), as
``<output>/<views>/0000.<frame>.<pass>.png`` plus relight3d's sidecars, which
:func:`~relight3d.data.gbuffer_frames.read_gbuffer_frames` reads back in relight3d's conventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional, Union

import torch

from relight3d.data.gbuffer_frames import GBufferFrame, write_gbuffer_frames
from relight3d.errors import DataError
from relight3d.pipelines.relight_field import render_view, view_points
from relight3d.pipelines.relight_material import MaterialSource, material_gbuffers
from relight3d.pipelines.relight_run import view_gbuffers
from relight3d.pipelines.relighting import RelightingPipeline, RelightingPipelineConfig

ViewSet = Literal["train", "test", "orbit"]
"""Which cameras ``relight3d export gbuffers`` renders."""


@dataclass
class GBufferExport:
    """What :func:`export_gbuffers` wrote."""

    clip: Path
    """The clip folder (``<output>/<views>``)."""
    frames: int
    """Frames written."""
    width: int
    height: int
    material: str
    """Where the material came from (the checkpoint's head, or how it was fitted)."""


def field_pipeline(
    field_run: Path,
    device: str = "cpu",
    data: Optional[Path] = None,
    material_source: MaterialSource = "physical",
    material_gbuffers: Optional[Path] = None,
    field_cache_dir: Optional[Path] = None,
) -> RelightingPipeline:
    """The trained field of ``field_run`` (a relight3d-tensorf / -ngp ``config.yml``) with a material head, geometry
    frozen, in a relighting pipeline that trains nothing (it supplies the G-buffers and the material fit)."""
    config = RelightingPipelineConfig(
        field_run=field_run, stage1_steps=0, stage2_steps=0, fit_material=True, material_source=material_source,
        material_gbuffers=material_gbuffers, field_cache_dir=field_cache_dir,
    )  # fmt: skip
    if data is not None:
        config.datamanager.data = data
    pipeline = config.setup(device=device, test_mode="val")
    pipeline.eval()
    return pipeline


def view_cameras(pipeline: RelightingPipeline, views: ViewSet, frames: int = 24):  # noqa: ANN201 - nerfstudio Cameras
    """The cameras of a view set: the training views, the held-out (eval) views, or an orbit of ``frames``."""
    from relight3d.export.camera_paths import camera_path_for

    if views == "train":
        return pipeline.datamanager.train_cameras
    if views == "test":
        return pipeline.datamanager.eval_dataset.cameras
    if views == "orbit":
        return camera_path_for(pipeline, "orbit", frames)[0]
    raise ValueError(f"views must be train, test or orbit, got {views!r}")


@torch.no_grad()
def render_gbuffer_frames(pipeline: RelightingPipeline, cameras) -> List[GBufferFrame]:  # noqa: ANN001
    """One :class:`GBufferFrame` per camera from the pipeline's frozen field (see the module docstring)."""
    model = pipeline.model
    pipeline.training_view_materials()  # fits the material head first when the checkpoint has none
    head = model.field.material
    frames = []
    for i in range(len(cameras)):
        camera = cameras[i : i + 1].to(model.device)
        out = render_view(model, camera, ("normals",))
        depth, mask = out["depth"].cpu(), out["accumulation"].clamp(0.0, 1.0).cpu()
        points, directions = view_points(camera, depth)
        gb = view_gbuffers(pipeline, out["normals"].cpu(), points, directions, mask[None])
        normals = gb.get("multiview_normals", gb["normals"])[0]
        material = material_gbuffers(head, points[None], mask[None, ..., 0] > 0.5)
        frames.append(
            GBufferFrame(
                base_color=material["base_color"][0], normals=normals, depth=depth, roughness=material["roughness"][0],
                metallic=material["metallic"][0], mask=mask, camera_to_world=camera.camera_to_worlds[0].cpu(),
            )
        )  # fmt: skip
    return frames


def export_gbuffers(
    field_run: Union[str, Path],
    output: Union[str, Path],
    views: ViewSet = "train",
    frames: int = 24,
    device: str = "cpu",
    data: Optional[Path] = None,
    material_source: MaterialSource = "physical",
    material_gbuffers: Optional[Path] = None,
    image_format: Literal["png", "jpg"] = "png",
    overwrite: bool = False,
) -> GBufferExport:
    """Write the G-buffers of ``views`` of the trained field ``field_run`` as ``<output>/<views>/`` (see the module
    docstring); ``frames`` is the orbit's length.

    Raises:
        DataError: the clip folder already holds files and ``overwrite`` is False (checked before anything loads),
            or the run / data / material frames cannot be read.
    """
    clip = Path(output) / views
    if clip.is_dir() and any(clip.iterdir()) and not overwrite:
        raise DataError(clip, "already holds files; pass --overwrite to replace the clip")
    pipeline = field_pipeline(Path(field_run), device, data, material_source, material_gbuffers)
    written = render_gbuffer_frames(pipeline, view_cameras(pipeline, views, frames))
    folder = write_gbuffer_frames(output, written, clip_name=views, image_format=image_format, overwrite=overwrite)
    origin = pipeline.state.material_origin or "the checkpoint's fitted material head"
    height, width = written[0].mask.shape[:2]
    return GBufferExport(folder, len(written), int(width), int(height), origin)


__all__ = ["GBufferExport", "ViewSet", "export_gbuffers", "field_pipeline", "render_gbuffer_frames", "view_cameras"]
