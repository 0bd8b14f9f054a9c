"""Mixed precision in the shared diffusion stack: every diffusion prior runs its networks in float16 or bfloat16,
with the VAE in float32 beside float16 networks unless told otherwise (diffusers' ``force_upcast`` rule), and gives
float32 results close to the float32 run's. CPU float16 / bfloat16 kernels stand in for CUDA's here."""

from __future__ import annotations

import dataclasses
from typing import Callable

import pytest
import torch
from prior_fixtures import TINY_MODELS, disc_views, orbit_cameras, sun_envmap

from relight3d.errors import ConfigError
from relight3d.priors.base import PriorViews
from relight3d.priors.diffusion.components import TEXT_PARTS
from relight3d.priors.diffusion.loading import resolve_vae_dtype
from relight3d.priors.diffusion.testing import tiny_components

F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32


@pytest.mark.parametrize(
    "name, dtype, force_upcast, expected",
    [
        ("auto", F16, True, F32),  # diffusers' upcast_vae: float16 networks, a VAE marked force_upcast
        ("auto", F16, False, F16),  # a VAE fixed for float16 (force_upcast false in its config)
        ("auto", BF16, True, BF16),  # bfloat16 has float32's range: never upcast
        ("auto", F32, True, F32),
        ("same", F16, True, F16),  # diffusers' SD 1.x / InstructPix2Pix pipelines: one dtype for everything
        ("bfloat16", F16, True, BF16),
    ],
)
def test_vae_dtype_follows_diffusers_upcast_rule(name: str, dtype, force_upcast: bool, expected) -> None:
    assert resolve_vae_dtype(name, dtype, force_upcast) == expected


def test_vae_dtype_names_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^X.vae_dtype: unknown dtype 'half' \(choose one of auto, same, float32"):
        resolve_vae_dtype("half", F16, True, "X.vae_dtype")


def test_components_move_the_vae_to_its_own_dtype() -> None:
    parts = tiny_components(TEXT_PARTS, 4).to("cpu", F16, F32)
    assert (parts.unet.dtype, parts.text_encoder.dtype, parts.vae.dtype) == (F16, F16, F32)
    latents = parts.encode_images(torch.rand(1, 3, 16, 16))
    assert latents.dtype == F32 and parts.decode_latents(latents).dtype == F32
    parts.to("cpu")  # no dtype: every network keeps its own
    assert (parts.unet.dtype, parts.vae.dtype) == (F16, F32)


@pytest.mark.parametrize(
    "dtype, vae_dtype, expected_vae, tolerance",
    [("float16", "auto", F32, 0.01), ("float16", "same", F16, 0.01), ("bfloat16", "auto", BF16, 0.05)],
)
@pytest.mark.parametrize("config_class", list(TINY_MODELS), ids=lambda c: c.__name__)
def test_priors_run_in_half_precision_close_to_float32(
    config_class: type, dtype: str, vae_dtype: str, expected_vae, tolerance: float, tiny_checkpoint: Callable
) -> None:
    """Networks in ``dtype``, the VAE in ``expected_vae``; relighting and the SDS gradient stay float32, finite and
    within ``tolerance`` of the float32 prior's (same weights, same seeds)."""

    def run(**precision):
        fields = dict(model_path=tiny_checkpoint(config_class), num_inference_steps=2, **precision)
        if any(f.name == "envmap_height" for f in dataclasses.fields(config_class)):
            fields["envmap_height"] = 16
        prior = config_class(**fields).setup()
        images, masks = disc_views(2)
        cameras, env = orbit_cameras(2), sun_envmap((0.0, 1.0, 0.5))
        relit = prior.relight(PriorViews(images, masks, cameras, env, generator=0))
        rendered = images.clone().requires_grad_(True)
        prior.sds_loss(PriorViews(rendered, masks, cameras, env, generator=0))["loss_sds"].backward()
        return prior, relit, rendered.grad

    prior, relit, grad = run(dtype=dtype, vae_dtype=vae_dtype)
    networks = {
        name: part.dtype for name, part in prior.components.parts().items() if isinstance(part, torch.nn.Module)
    }
    assert networks.pop("vae") == expected_vae
    assert set(networks.values()) == {getattr(torch, dtype)}, networks
    _, relit_32, grad_32 = run(dtype="float32")
    assert relit.dtype == grad.dtype == F32 and bool(torch.isfinite(grad).all())
    torch.testing.assert_close(relit, relit_32, atol=tolerance, rtol=0)
    assert float((grad - grad_32).norm() / grad_32.norm()) < 2 * tolerance
