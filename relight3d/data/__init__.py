"""Datasets: dataparsers, the datamanager, input checks, the RGBA reader and the scenes relight3d renders itself.

Layer: ``fields`` / ``lighting`` / ``data`` / ``eval`` / ``export`` (imports only :mod:`relight3d.geometry`,
:mod:`relight3d.errors` and the other packages of this layer; models, priors, pipelines and the CLIs use it).

Modules:

* :mod:`~relight3d.data.validation`: checks that turn bad files into one-line :class:`~relight3d.errors.DataError`
  messages (regular files, image formats and modes, 16-bit PNGs, poses, paths that must stay inside a dataset).
* :mod:`~relight3d.data.images`: :func:`~relight3d.data.images.read_rgba`, the one RGBA image reader.
* :mod:`~relight3d.data.blender`, :mod:`~relight3d.data.objaverse`, :mod:`~relight3d.data.single_image`: the
  dataparsers (checked Blender scenes, Objaverse / Neural Gaffer object folders, one RGBA image), with
  :mod:`~relight3d.data.object_outputs` for what the object parsers return.
* :mod:`~relight3d.data.dataparser_configs`: the table of dataparsers ``ns-train`` offers.
* :mod:`~relight3d.data.checked_dataset` and :mod:`~relight3d.data.datamanager`: checked image decoding and the
  in-memory datamanager whose training images a pipeline can replace.
* :mod:`~relight3d.data.synthetic`: analytic scenes ray-traced in torch (the demo's scene and test fixtures).
* :mod:`~relight3d.data.benchmark_layout`: the folder layout of a generated relighting benchmark (written by the
  generator, :mod:`relight3d_bench`, outside the runtime package).

Importing this package imports nothing (the Blender side of :mod:`relight3d_bench` reads images through
:mod:`~relight3d.data.images` with numpy and Pillow alone).
"""
