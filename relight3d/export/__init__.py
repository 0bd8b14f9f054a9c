"""Exports of trained relight3d fields: meshes (:mod:`.mesh`, :mod:`.texture`) and videos (:mod:`.video`,
:mod:`.camera_paths`). The ``relight3d export`` command (:mod:`.cli`) only wraps these functions.

Names are resolved lazily, so importing this package (which the CLI does on every start) loads nothing heavy::

    from relight3d.engine.loading import load_trained_pipeline
    from relight3d.export import camera_path_for, export_mesh, render_video

    config, pipeline = load_trained_pipeline("outputs/scene/relight3d-tensorf/<timestamp>/config.yml")
    export_mesh(pipeline, "mesh.glb", resolution=256, target_faces=200_000)
    cameras, _ = camera_path_for(pipeline, "orbit", n_frames=120)
    render_video(pipeline, cameras, "orbit.mp4", outputs=("rgb", "normals"))
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MeshExportConfig": "relight3d.export.mesh",
    "MeshExporter": "relight3d.export.mesh",
    "NoSurfaceError": "relight3d.export.mesh",
    "extract_mesh": "relight3d.export.mesh",
    "export_mesh": "relight3d.export.mesh",
    "surface_density_threshold": "relight3d.export.mesh",
    "bake_texture": "relight3d.export.texture",
    "render_mesh_preview": "relight3d.export.preview",
    "VideoExportConfig": "relight3d.export.video",
    "VideoRenderer": "relight3d.export.video",
    "LightPath": "relight3d.export.video",
    "RotatingLightPath": "relight3d.export.video",
    "render_video": "relight3d.export.video",
    "ViewSettings": "relight3d.export.camera_paths",
    "default_view": "relight3d.export.camera_paths",
    "camera_path_for": "relight3d.export.camera_paths",
    "orbit_path": "relight3d.export.camera_paths",
    "spiral_path": "relight3d.export.camera_paths",
    "load_camera_path_json": "relight3d.export.camera_paths",
    "write_camera_path_json": "relight3d.export.camera_paths",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'relight3d.export' has no attribute '{name}'")
