"""relight3d_bench: the generators of the relighting benchmark (Neural Gaffer-style objects x lights, path-traced with
Blender Cycles) and of relighting training sets. It sits outside the runtime package ``relight3d``, which never imports it; in the layering it is an
app (the top layer, with the ``relight3d`` CLI), so it may import anything from ``relight3d``.

Modules:

* :mod:`~relight3d_bench.config`: the objects, the lights and the render settings (dataclasses; cheap to import),
  the cache folder and where the meshes come from (CGAL's data archive: ``resolve_meshes_archive``).
* :mod:`~relight3d_bench.cameras`: the seeded cameras, posed with :func:`relight3d.geometry.look_at` (torch).
* :mod:`~relight3d_bench.runner`: finds a Python with ``bpy`` and runs the renderer in it
  (:func:`~relight3d_bench.runner.make_benchmark`).
* :mod:`~relight3d_bench.render_benchmark`, :mod:`~relight3d_bench.cycles_scene` and :mod:`~relight3d_bench.meshes`:
  the Blender side (numpy, Pillow and ``bpy``; no torch), also used by ``datasets/render_object_scene.py``.
* :mod:`~relight3d_bench.cli`: ``relight3d bench make | check-noise``.
* Training data (``relight3d data render``, :mod:`~relight3d_bench.data_cli`, which also adds ``relight3d data
  from-images``): :mod:`~relight3d_bench.dataset_config` (settings, bundled objects, the seeded plan),
  :mod:`~relight3d_bench.dataset_runner` (the workers, progress, manifest; the dataset layout),
  :mod:`~relight3d_bench.render_dataset` (the Blender side: renders and ray-cast G-buffers) and
  :mod:`~relight3d_bench.procedural` (meshes that need no file).

The folder layout a benchmark is written in is read by relight3d's evaluation, so it lives in the runtime package:
:mod:`relight3d.data.benchmark_layout`. Importing this package imports nothing: the Blender side must not pull in
torch.
"""
