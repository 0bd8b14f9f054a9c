"""Exports of trained relight3d fields: meshes and videos.

Layer: ``fields / lighting / data / eval / export`` (imports :mod:`relight3d.data` beside it and
:mod:`relight3d.geometry`, ``errors``, ``_optional`` and ``cli_types`` below it; the pipeline it exports is passed in).
Modules:

* :mod:`.mesh` (``MeshExportConfig``, ``extract_mesh``, ``export_mesh``, ``write_mesh``), built on
  :mod:`.mesh_threshold` (the box and the surface's density level) and :mod:`.mesh_surface` (density grid, marching
  cubes, cleanup, vertex colours); :mod:`.texture` bakes a UV texture, :mod:`.preview` renders a mesh in software;
* :mod:`.orbits` (view directions around a target for any world up), :mod:`.camera_paths` (orbits, spirals and
  nerfstudio camera-path JSON, on :mod:`relight3d.geometry`) and :mod:`.video` (``render_video``);
* :mod:`.output_paths` (output files checked before any work); :mod:`.cli` (``relight3d export``; an app-layer
  module).

Example::

    from relight3d.engine.loading import load_trained_pipeline
    from relight3d.export.camera_paths import camera_path_for
    from relight3d.export.mesh import export_mesh
    from relight3d.export.video import render_video

    config, pipeline = load_trained_pipeline("outputs/scene/relight3d-tensorf/<timestamp>/config.yml")
    export_mesh(pipeline, "mesh.glb", resolution=256, target_faces=200_000)
    cameras, _ = camera_path_for(pipeline, "orbit", n_frames=120)
    render_video(pipeline, cameras, "orbit.mp4", outputs=("rgb", "normals"))
"""
