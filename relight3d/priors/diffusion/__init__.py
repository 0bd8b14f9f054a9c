"""The diffusion stack shared by every diffusion prior and by score-distillation guidance (layer: models/priors).

Loading, prompts, guidance, schedulers and sampling are written once here; each prior file
(:mod:`~relight3d.priors.neural_gaffer`, :mod:`~relight3d.priors.ic_light`, :mod:`~relight3d.priors.instruct_pix2pix`,
:mod:`~relight3d.priors.stable_diffusion`) holds only its conditioning and channel layout.

* :mod:`.loading`: local folders only, safetensors only; ``WeightsError(path, problem)`` for missing or bad
  weights, ``ConfigError`` for unset paths and unknown dtypes.
* :mod:`.components`: :class:`~.components.DiffusionComponents` (UNet, VAE, scheduler, text or image encoder):
  ``from_pretrained`` / ``save_pretrained``, device and dtype placement, VAE encode / decode, prompt encoding.
* :mod:`.prompts`: CLIP prompt embeddings and learned (textual-inversion) tokens.
* :mod:`.guidance`: one batched UNet call over the guidance branches, classifier-free guidance, v-prediction to
  noise, and the score-distillation loss.
* :mod:`.schedulers`: samplers by name (``ddim``, ``ddpm``, ``euler``, ...) on a checkpoint's noise schedule.
* :mod:`.sampling`: sampling from noise and SDEdit refinement, step for step as diffusers' pipelines.
* :mod:`.testing`: the tiny random models that tests and weight-free benchmarks use (the only copy).

Imports: torch, :mod:`relight3d.errors` and :mod:`relight3d.priors.base`; diffusers and transformers only inside
functions, so importing this package is cheap.
"""
