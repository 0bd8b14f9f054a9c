"""Meshes from trained relight3d fields: chunked density sampling, marching cubes, cleanup, colours and textures.

The pipeline (:class:`MeshExporter`):

1. **Box.** The occupancy grid's occupied cells (intersected with the field's box), padded so that the outermost
   grid layer lies in empty space. That layer is forced below the threshold, so every surface is closed.
2. **Density grid and marching cubes.** Densities are queried ``chunk_size`` points at a time into a float32 grid
   (4 bytes per sample: 512 MiB at 512^3); voids inside the object that no path from outside reaches, through
   cracks wider than a few cells, are filled (a field trained on views of the outside is often hollow, with a
   cracked shell; about 4 more bytes per sample while filling); PyMCubes then triangulates the grid in
   slabs of ``slab_depth`` z-layers, so its float64 working copy stays small. Slabs share their boundary layer,
   so their vertices coincide there and are merged exactly.
3. **Threshold** (chosen first). A density, or a rule. ``"masks"``: the level whose iso-surface silhouettes best
   match the training images' alpha masks (IoU over rays through training pixels, half of them on the masks'
   edges); this is what makes a briefly trained, soft field give a surface in the right place. ``"opacity"``: the
   median density at which rays from outside reach 50 % opacity (transmittance 1/2). ``"auto"``: ``"masks"`` when
   a pipeline with RGBA training images is given (and its masks are matched with IoU >= 0.5), else ``"opacity"``.
4. **Cleanup** (trimesh): degenerate and duplicate faces removed, vertices merged, the largest components kept,
   consistent outward winding.
5. **Decimation** (optional, open3d quadric decimation) to a target face count.
6. **Colour**: per vertex, a short volume-rendered ray through the surface along the inward normal, using the
   field's own density and colour (so a threshold a little off the peak of the rendering weights still gets the
   colour a camera sees). Optionally a UV texture (:mod:`relight3d.export.texture`).

A field with no surface at the threshold raises :class:`NoSurfaceError` naming the density range it saw, instead of
writing an empty file.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple, Type, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.errors import ConfigError, DataError
from relight3d.export.mesh_surface import (
    GridSpec,
    clean_mesh,
    decimate_mesh,
    fill_cavities,
    marching_cubes_in_slabs,
    sample_density_grid,
    surface_colors,
)
from relight3d.export.mesh_threshold import (
    NoSurfaceError,
    Silhouettes,
    mask_calibrated_threshold,
    occupied_box,
    surface_density_threshold,
    training_silhouettes,
)
from relight3d.export.output_paths import check_output_path

MESH_SUFFIXES: Tuple[str, ...] = (".ply", ".obj", ".glb")
"""File formats :func:`export_mesh` writes (by extension)."""
TEXTURE_SUFFIXES: Tuple[str, ...] = (".obj", ".glb")
"""Formats that can carry a UV texture."""

THRESHOLD_RULES: Tuple[str, ...] = ("auto", "masks", "opacity")
"""Names of the rules that choose the density threshold (see :class:`MeshExportConfig`)."""


# --- configuration ------------------------------------------------------------------------------------------------
@dataclass
class MeshExportConfig:
    """How a mesh is extracted from a field."""

    _target: Type = field(default_factory=lambda: MeshExporter)
    """Exporter class to instantiate."""
    resolution: int = 256
    """Grid samples along the longest side of the box (voxels are cubes; shorter sides get fewer samples)."""
    threshold: Union[float, Literal["auto", "masks", "opacity"]] = "auto"
    """Density iso-level of the surface, or a rule: 'masks' picks the level whose silhouettes best match the training
    masks (alpha); 'opacity' the median density where rays from outside reach 50 % opacity; 'auto' uses 'masks'
    when the training images have alpha and a pipeline is given, else 'opacity'."""
    mask_views: int = 16
    """Training views used by the 'masks' rule."""
    mask_rays_per_view: int = 1024
    """Rays per view for the 'masks' rule (half of them on the silhouette's edge)."""
    mask_ray_samples: int = 256
    """Density samples per ray for the 'masks' rule."""
    chunk_size: int = 1 << 18
    """Points per density query (bounds the memory of the field's intermediates)."""
    slab_depth: int = 32
    """z-layers triangulated at once (bounds the float64 copy that PyMCubes works on)."""
    fill_cavities: bool = True
    """Fill voids inside the object (empty space unreachable from outside) so they make no inner surfaces."""
    seal_width: int = 2
    """Cracks in the object's shell up to about twice this many grid cells wide count as closed when filling."""
    box_margin_cells: float = 2.0
    """Margin, in grid cells, added around the occupied box before the empty outer layer."""
    keep_components: int = 1
    """Keep this many largest connected components (0 keeps all)."""
    min_component_fraction: float = 0.0
    """Also drop kept components with fewer faces than this fraction of the largest one."""
    target_faces: Optional[int] = None
    """Decimate (open3d quadric decimation) to about this many faces; None keeps all."""
    vertex_colors: bool = True
    """Colour vertices from the field."""
    color_ray_cells: float = 2.0
    """Half-length, in grid cells, of the short ray through the surface used to colour a point."""
    color_ray_samples: int = 8
    """Samples on that ray."""
    texture_size: Optional[int] = None
    """Bake a UV texture of this many pixels per side (needs xatlas; .obj or .glb output); None for no texture."""
    texture_backend: Literal["auto", "nvdiffrast", "torch"] = "auto"
    """UV rasteriser of the bake: nvdiffrast (CUDA), the torch rasteriser, or 'auto' (nvdiffrast on CUDA if it
    loads, else torch)."""
    auto_threshold_rays: int = 2048
    """Rays cast from outside to find the automatic threshold."""
    auto_threshold_samples: int = 512
    """Samples per such ray."""
    progress: bool = True
    """Show progress bars."""
    seed: int = 0
    """Seed of the automatic threshold's random rays."""

    def setup(self) -> "MeshExporter":
        return self._target(self)


# --- the box and the threshold -----------------------------------------------------------------------------------
# --- colour -------------------------------------------------------------------------------------------------------
# --- the exporter ----------------------------------------------------------------------------------------------
class MeshExporter:
    """Extracts a cleaned, coloured mesh from an :class:`~relight3d.models.base.OccupancyFieldModel` and writes it."""

    def __init__(self, config: MeshExportConfig) -> None:
        self.config = config

    def resolve_threshold(
        self, model: nn.Module, box: Float[Tensor, "6"], silhouettes: Optional[Silhouettes] = None
    ) -> Tuple[float, Dict[str, Any]]:
        """The configured threshold, or the one a rule picks; with a record of how it was chosen.

        Raises:
            ConfigError: an unknown rule, a threshold <= 0, or the 'masks' rule without silhouettes.
        """
        c = self.config
        rule = c.threshold
        if not isinstance(rule, str):
            if not float(rule) > 0:
                raise ConfigError("threshold", f"the density threshold must be positive, got {rule}")
            return float(rule), {"threshold_mode": "fixed"}
        if rule not in THRESHOLD_RULES:
            rules = ", ".join(THRESHOLD_RULES)
            raise ConfigError("threshold", f"unknown rule '{rule}'; use a number or one of {rules}")
        if rule == "masks" and silhouettes is None:
            raise ConfigError("threshold", "the 'masks' threshold needs training views with alpha masks")
        info: Dict[str, Any] = {}
        if rule in ("auto", "masks") and silhouettes is not None:
            value, iou = mask_calibrated_threshold(model.field.density, box, silhouettes, c.mask_ray_samples, c.seed)
            info = {"threshold_mode": "masks", "mask_iou": iou, "mask_rays": int(silhouettes.inside.numel())}
            if rule == "masks" or (iou >= 0.5 and value > 0):
                return value, info
            info = {"masks_rejected_iou": iou}  # the field does not match its masks: fall back
        value = surface_density_threshold(
            model.field.density, box, c.auto_threshold_rays, c.auto_threshold_samples, seed=c.seed
        )
        return value, {**info, "threshold_mode": "opacity"}

    @torch.no_grad()
    def extract(
        self, model: nn.Module, source: Union[str, Path] = "density field", silhouettes: Optional[Silhouettes] = None
    ) -> Any:
        """The mesh of ``model``'s field as a ``trimesh.Trimesh`` (vertex colours included when configured).

        ``silhouettes`` (training rays and masks, see :func:`training_silhouettes`) enable the 'masks' threshold.
        ``mesh.metadata['relight3d']`` records the threshold and how it was chosen, the grid, the density range,
        the components found and timings.

        Raises:
            NoSurfaceError: no surface at the threshold (the message names ``source`` and the density range).
        """
        t_start = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            box = occupied_box(model)
            threshold, info = self.resolve_threshold(model, box, silhouettes)
            grid = GridSpec.around(box, self.config.resolution, self.config.box_margin_cells)
            mesh, grid_info = self._surface(model.field, grid, threshold, source)
            self._colour(mesh, model.field, grid)
            if self.config.texture_size:
                mesh = self._bake(mesh, model.field, grid)
        finally:
            model.train(was_training)
        mesh.metadata["relight3d"] = {
            "threshold": threshold,
            **info,
            "grid_shape": list(grid.shape),
            "grid_step": grid.step,
            "box": [float(v) for v in box.cpu()],
            **grid_info,
            "seconds_total": time.perf_counter() - t_start,
        }
        return mesh

    def _surface(
        self, field_: nn.Module, grid: GridSpec, threshold: float, source: Union[str, Path]
    ) -> Tuple[Any, Dict[str, Any]]:
        """The cleaned (and decimated) iso-surface of ``field_`` on ``grid``, and what was found on the way."""
        import trimesh

        c = self.config
        t_grid = time.perf_counter()
        volume = sample_density_grid(field_.density, grid, field_.aabb.device, c.chunk_size, c.progress)
        d_min, d_max = float(volume.min()), float(volume.max())
        filled = fill_cavities(volume, threshold, c.seal_width) if c.fill_cavities else 0
        vertices, faces = marching_cubes_in_slabs(volume, grid, threshold, c.slab_depth, c.progress)
        del volume
        seconds_grid = time.perf_counter() - t_grid
        if len(faces) == 0:
            raise NoSurfaceError(
                source,
                f"no surface at density threshold {threshold:.4g}: the density on the {grid.shape} grid ranges "
                f"from {d_min:.4g} to {d_max:.4g}; choose a threshold inside that range",
            )
        mesh = clean_mesh(trimesh.Trimesh(vertices, faces, process=False), c.keep_components, c.min_component_fraction)
        found = int(mesh.metadata.get("components_found", 1))
        if c.target_faces is not None:
            mesh = clean_mesh(decimate_mesh(mesh, c.target_faces), 0)
        return mesh, {
            "density_range": [d_min, d_max],
            "components_found": found,
            "cavity_samples_filled": filled,
            "seconds_grid_and_marching_cubes": seconds_grid,
        }

    def _color_fn(self, field_: nn.Module, grid: GridSpec):  # noqa: ANN202 - (points, normals) -> colours
        half, samples = self.config.color_ray_cells * grid.step, self.config.color_ray_samples
        return lambda points, normals: surface_colors(field_, points, normals, half, samples)

    def _colour(self, mesh: Any, field_: nn.Module, grid: GridSpec) -> None:
        """Set the vertex colours of ``mesh`` (in place) from the field, when configured."""
        import trimesh

        if not self.config.vertex_colors:
            return
        device = field_.aabb.device
        points = torch.from_numpy(np.array(mesh.vertices, dtype=np.float32)).to(device)
        normals = torch.from_numpy(np.array(mesh.vertex_normals, dtype=np.float32)).to(device)
        colors = (self._color_fn(field_, grid)(points, normals).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        rgba = np.concatenate([colors, np.full((len(colors), 1), 255, np.uint8)], axis=1)
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba)

    def _bake(self, mesh: Any, field_: nn.Module, grid: GridSpec) -> Any:
        """``mesh`` with a UV texture of the field's colours (:func:`relight3d.export.texture.bake_texture`)."""
        from relight3d.export.texture import bake_texture

        c = self.config
        color_fn = self._color_fn(field_, grid)
        return bake_texture(mesh, color_fn, c.texture_size, backend=c.texture_backend, device=field_.aabb.device)

    def export(
        self,
        model: nn.Module,
        output: Union[str, Path],
        source: Union[str, Path] = "density field",
        silhouettes: Optional[Silhouettes] = None,
    ) -> Any:
        """Extract the mesh and write it to ``output`` (.ply, .obj or .glb); returns the mesh."""
        out = check_mesh_output(output, textured=bool(self.config.texture_size))
        mesh = self.extract(model, source, silhouettes)
        write_mesh(mesh, out)
        return mesh

    def silhouettes_for(self, model_or_pipeline: nn.Module) -> Optional[Silhouettes]:
        """Training silhouettes of a pipeline when the threshold rule can use them (None for a bare model)."""
        c = self.config
        if c.threshold not in ("auto", "masks") or not hasattr(model_or_pipeline, "datamanager"):
            return None
        return training_silhouettes(model_or_pipeline, c.mask_views, c.mask_rays_per_view, c.seed)


def check_mesh_output(output: Union[str, Path], textured: bool = False) -> Path:
    """Validate a mesh output path before any work (extension, writable folder, texture support)."""
    out = check_output_path(output, MESH_SUFFIXES, "mesh")
    if textured and out.suffix.lower() not in TEXTURE_SUFFIXES:
        raise DataError(out, f"a UV texture needs {' or '.join(TEXTURE_SUFFIXES)} output, not {out.suffix}")
    return out


def write_mesh(mesh: Any, output: Path) -> None:
    """Write ``mesh`` by extension; an .obj with a texture gets its .mtl and .png beside it."""
    suffix = output.suffix.lower()
    if suffix == ".obj":
        import trimesh

        material = getattr(mesh.visual, "material", None)
        if material is not None:
            material.name = output.stem  # the texture is written as <stem>.png beside <stem>.obj / <stem>.mtl
        text, files = trimesh.exchange.obj.export_obj(
            mesh, include_color=True, return_texture=True, mtl_name=output.with_suffix(".mtl").name
        )
        for name, data in files.items():
            (output.parent / name).write_bytes(data)
        output.write_text(text)
    else:
        mesh.export(output)


def _model_of(model_or_pipeline: nn.Module) -> nn.Module:
    return getattr(model_or_pipeline, "model", model_or_pipeline)


def extract_mesh(model: nn.Module, config: Optional[MeshExportConfig] = None, **overrides: Any) -> Any:
    """The mesh of a trained model (or pipeline) as a ``trimesh.Trimesh``.

    Args:
        model: an OccupancyFieldModel, or a pipeline holding one (a pipeline also lends its training masks to the
            'auto' / 'masks' threshold).
        config: extraction settings (default: :class:`MeshExportConfig`).
        **overrides: fields of the config to change, e.g. ``resolution=128``.

    Example:
        >>> config, pipeline = load_trained_pipeline("outputs/.../config.yml")  # doctest: +SKIP
        >>> mesh = extract_mesh(pipeline, resolution=256, target_faces=100_000)  # doctest: +SKIP
    """
    exporter = _with_overrides(config, overrides).setup()
    return exporter.extract(_model_of(model), silhouettes=exporter.silhouettes_for(model))


def export_mesh(
    model: nn.Module,
    output: Union[str, Path],
    config: Optional[MeshExportConfig] = None,
    **overrides: Any,
) -> Any:
    """Extract the mesh of a trained model (or pipeline) and write it to ``output`` (.ply, .obj or .glb)."""
    exporter = _with_overrides(config, overrides).setup()
    return exporter.export(_model_of(model), output, silhouettes=exporter.silhouettes_for(model))


def _with_overrides(config: Optional[MeshExportConfig], overrides: Dict[str, Any]) -> MeshExportConfig:
    return dataclasses.replace(config or MeshExportConfig(), **overrides)
