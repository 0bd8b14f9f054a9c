"""Training engine: nerfstudio's Trainer made crash-safe, safe loading of runs, and training from Python.

Layer: ``pipelines`` (with :mod:`relight3d.pipelines`; imports the layers below, never a CLI or
:mod:`relight3d.method_configs`).

Modules:

* :mod:`~relight3d.engine.trainer`: the Trainer with atomic checkpoints, safe resumption, checks before training
  and one-line errors under ``ns-train``.
* :mod:`~relight3d.engine.safe_config`: a YAML loader for a run's ``config.yml`` that builds only allowlisted classes.
* :mod:`~relight3d.engine.loading`: a trained pipeline from its ``config.yml`` and latest checkpoint.
* :mod:`~relight3d.engine.run`: train, evaluate and time pipelines from Python, as ``ns-train`` does.
"""
