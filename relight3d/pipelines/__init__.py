"""Pipelines: the training loops that use 2D priors. The pipeline owns the prior; the model stays a radiance field.

Layer: pipelines (with :mod:`relight3d.engine`), below the apps (``relight3d.cli``, ``relight3d.method_configs``,
``relight3d.demo``, :mod:`relight3d.pipelines.cli`) and above models / priors. The methods' trainer configs are
built in the apps layer and passed in; nothing here imports ``relight3d.method_configs``.

Relighting (``ns-train relight3d-gaffer``, Neural Gaffer's two stages), read in this order:

* :mod:`~relight3d.pipelines.relighting`: the config and the pipeline, which wires the stages together.
* :mod:`~relight3d.pipelines.relight_state`: the plain dataclass of its run-time state (prior, caches, timings).
* :mod:`~relight3d.pipelines.relight_field`: the frozen trained field: loading a run, rendering views, G-buffers,
  shadow visibility, the on-disk field cache.
* :mod:`~relight3d.pipelines.relight_lights`: the target map and the source light (given, recorded or estimated).
* :mod:`~relight3d.pipelines.relight_stage1`: relight the training views with the prior, cache them.
* :mod:`~relight3d.pipelines.relight_stage2`: render, refine with the prior, fit; the ``t*`` schedule.
* :mod:`~relight3d.pipelines.relight_run` / :mod:`~relight3d.pipelines.relight_eval`: ``relight3d relight``: one
  run per target map, scored against ground truth on any layout, videos and a report.

Score distillation (``ns-train relight3d-sds``, RealFusion):

* :mod:`~relight3d.pipelines.score_distillation`: the config and the pipeline (reference view + SDS prior views).
* :mod:`~relight3d.pipelines.sds_views`: the reference image and its camera, prior cameras, chunked rendering.
* :mod:`~relight3d.pipelines.sds_losses`: annealed loss weights and the regularisers.
* :mod:`~relight3d.pipelines.sds_checks`: weight-free checks (reconstruction of a photo, training speed).

Training priors (``relight3d train-prior``, ``relight3d data from-images``):

* :mod:`~relight3d.pipelines.prior_training`: the shared diffusers + accelerate loop (deterministic batches, EMA,
  atomic checkpoints that resume exactly, validation images, loss curves).
* One task per model: :mod:`~relight3d.pipelines.relight_unet_training`, :mod:`~relight3d.pipelines.ip2p_training`,
  :mod:`~relight3d.pipelines.gaffer_training`, :mod:`~relight3d.pipelines.gbuffer_training`.
* :mod:`~relight3d.pipelines.image_triplets` (with ``image_files``, ``image_intrinsics``, ``image_degradation``,
  ``image_models`` and ``image_triplets_cli``): photos to (photo, instruction, relit photo) triplets.
* :mod:`~relight3d.pipelines.gbuffer_export`: ``relight3d export gbuffers``;
  :mod:`~relight3d.pipelines.relight_material`: the material head's fit.

Nothing is imported here, so that ``import relight3d.pipelines.<module>`` stays cheap.
"""
