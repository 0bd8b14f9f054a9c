"""Classifier-free guidance and the score-distillation loss, shared by every diffusion prior and by SDS guidance.

* :func:`unet_branches` runs the guidance branches of a UNet call as one batch: branch ``i`` is the noisy latent
  (with its concatenated condition latents, for image-conditioned UNets) under context ``i``. Each prior only says
  what its branches are (e.g. Neural Gaffer zeroes every condition in its unconditional branch, IC-Light keeps the
  image conditions and drops the text, InstructPix2Pix has three branches).
* :func:`classifier_free` combines two branches: ``eps_u + s (eps_c - eps_u)``; :func:`guided_noise` runs and
  combines them.
* :func:`score_distillation` turns a guided prediction into DreamFusion's SDS loss (derivation in its docstring).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import torch
from jaxtyping import Float
from torch import Tensor


def batched_timesteps(t: Union[int, Tensor], batch: int, copies: int, device: torch.device) -> Tensor:
    """Timesteps for a UNet call on ``copies`` stacked copies of a batch of ``batch`` latents."""
    t = torch.as_tensor(t, device=device)
    if t.dim() == 0:
        t = t.expand(batch)
    return t.repeat(copies)


def unet_branches(
    unet: Any,
    latents: Float[Tensor, "b c h w"],
    t: Union[int, Tensor],
    contexts: Sequence[Tensor],
    concats: Optional[Sequence[Tensor]] = None,
) -> Tuple[Tensor, ...]:
    """The UNet's predictions (float32) for each guidance branch, computed as one batch.

    Args:
        unet: A diffusers ``UNet2DConditionModel`` (its dtype is used for the inputs).
        latents: The noisy latents (same in every branch).
        t: The timestep (scalar) or one per latent.
        contexts: Per branch, the cross-attention context ``[b, n, d]``.
        concats: Per branch, latents concatenated to the noisy latent along channels (None: none).
    """
    copies, batch = len(contexts), latents.shape[0]
    sample = torch.cat([latents] * copies)
    if concats is not None:
        sample = torch.cat([sample, torch.cat(list(concats))], dim=1)
    timesteps = batched_timesteps(t, batch, copies, latents.device)
    context = torch.cat(list(contexts)).to(unet.dtype)
    out = unet(sample.to(unet.dtype), timesteps, encoder_hidden_states=context).sample.float()
    return out.chunk(copies)


def classifier_free(uncond: Tensor, cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def guided_noise(
    unet: Any,
    latents: Float[Tensor, "b c h w"],
    t: Union[int, Tensor],
    scale: float,
    contexts: Tuple[Tensor, Tensor],
    concats: Optional[Tuple[Tensor, Tensor]] = None,
) -> Float[Tensor, "b c h w"]:
    """Classifier-free-guided noise prediction from an ``(unconditional, conditional)`` pair of contexts (and of
    concatenated latents); with ``scale <= 1`` only the conditional branch runs (``scale = 1`` is the same)."""
    if scale <= 1.0:
        return unet_branches(unet, latents, t, contexts[1:], None if concats is None else concats[1:])[0]
    uncond, cond = unet_branches(unet, latents, t, contexts, concats)
    return classifier_free(uncond, cond, scale)


def epsilon_from(
    prediction: Float[Tensor, "b c h w"], noisy: Float[Tensor, "b c h w"], alpha_bar: Tensor, prediction_type: str
) -> Float[Tensor, "b c h w"]:
    """The noise implied by a UNet output: itself for epsilon models; ``sqrt(a) v + sqrt(1 - a) x_t`` for
    v-prediction models (Stable Diffusion 2.x at 768 px), with ``a = alpha_bar_t`` broadcast per latent."""
    if prediction_type != "v_prediction":
        return prediction
    a = alpha_bar.reshape(-1, *([1] * (prediction.dim() - 1))).float()
    return a.sqrt() * prediction + (1.0 - a).sqrt() * noisy.float()


def score_distillation(
    latents: Float[Tensor, "b c h w"],
    noise: Float[Tensor, "b c h w"],
    eps_hat: Float[Tensor, "b c h w"],
    weight: Tensor,
) -> Tuple[Tensor, Tensor]:
    """The SDS loss of ``latents`` and its gradient ``g = w(t) (eps_hat - eps)`` (detached, NaNs zeroed).

    Derivation. Score distillation wants the update ``g`` for the latents ``z``, where ``eps_hat`` is the guided
    noise prediction at ``z_t = sqrt(alpha_bar_t) z + sqrt(1 - alpha_bar_t) eps``; DreamFusion drops the UNet
    Jacobian ``d eps_hat / d z_t``, so ``g`` is not the gradient of any loss autograd could see. With ``g`` computed
    without gradients, define

        L(z) = 1/2 * || z - sg(z - g) ||^2 / b        (sg = stop-gradient, ``.detach()``; b = batch size)

    The target ``sg(z - g)`` is a constant to autograd, so ``dL/dz = (z - (z - g)) / b = g / b`` exactly:
    backpropagating ``L`` through the VAE encoder and the renderer applies the SDS update, and the UNet is never
    differentiated. ``L``'s value, ``||g||^2 / 2b``, only gauges the update's size.

    Args:
        latents: Scaled VAE latents, with gradients.
        noise: The noise ``eps`` the latents were noised with.
        eps_hat: The guided noise prediction (float32, no gradients).
        weight: ``w(t)`` per latent (``[b]``).

    Returns:
        ``(loss, g)``.
    """
    b = latents.shape[0]
    w = weight.reshape(b, *([1] * (latents.dim() - 1))).float()
    grad = torch.nan_to_num(w * (eps_hat.float() - noise.float())).detach()
    target = (latents.float() - grad).detach()
    loss = 0.5 * (latents.float() - target).square().sum() / b
    return loss, grad
