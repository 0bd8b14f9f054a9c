"""Pipelines: the training loops that use 2D priors (score distillation; relighting).

Nothing is imported here, so that ``import relight3d.pipelines.<module>`` stays cheap.
"""
