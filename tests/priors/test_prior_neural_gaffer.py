"""Neural Gaffer prior with a tiny random model of the same architecture (and real weights when available)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from prior_fixtures import (
    RESOLUTION,
    disc_views,
    neural_gaffer_components,
    orbit_cameras,
    save_components,
    sun_envmap,
    tiny_unet,
)

from relight3d.priors.base import PriorError, composite, to_square
from relight3d.priors.neural_gaffer import (
    CLIP_MEAN,
    CLIP_STD,
    NeuralGafferPrior,
    NeuralGafferPriorConfig,
    encode_lighting_images,
)


def _config(model_path: Path, **kwargs) -> NeuralGafferPriorConfig:
    kwargs.setdefault("num_inference_steps", 2)
    kwargs.setdefault("envmap_height", 16)
    return NeuralGafferPriorConfig(model_path=model_path, **kwargs)


@pytest.fixture(scope="module")
def prior(tiny_neural_gaffer_dir: Path) -> NeuralGafferPrior:
    return _config(tiny_neural_gaffer_dir).setup(device="cpu")


@pytest.fixture(scope="module")
def views():
    images, masks = disc_views(3)
    return images, masks, orbit_cameras(3)


def test_loads_from_folder_and_matches_the_saved_weights(prior: NeuralGafferPrior) -> None:
    reference = neural_gaffer_components()
    assert isinstance(prior, NeuralGafferPrior) and prior.resolution == RESOLUTION
    for name in ("unet", "vae", "image_encoder"):
        loaded = getattr(prior, name).state_dict()
        for key, value in reference[name].state_dict().items():
            assert torch.equal(loaded[key], value), (name, key)


def test_relight_is_deterministic_and_depends_on_the_seed_and_the_light(prior, views) -> None:
    images, masks, cameras = views
    left, right = sun_envmap((0.0, 1.0, 0.5)), sun_envmap((0.0, -1.0, 0.5))
    first = prior.relight(images, masks, cameras, left, generator=3)
    again = prior.relight(images, masks, cameras, left, generator=3)
    assert first.shape == images.shape and first.dtype == torch.float32
    assert torch.equal(first, again)
    other_seed = prior.relight(images, masks, cameras, left, generator=4)
    other_light = prior.relight(images, masks, cameras, right, generator=3)
    inside = masks.expand_as(images) > 0.5
    assert (first - other_seed)[inside].abs().mean() > 1e-3
    assert (first - other_light)[inside].abs().mean() > 1e-3
    # Outside the object the input is kept.
    assert torch.equal(first[~inside], images[~inside])


def test_a_view_does_not_depend_on_its_batch_or_device_split(tiny_neural_gaffer_dir, views) -> None:
    images, masks, cameras = views
    env = sun_envmap((1.0, 0.0, 1.0))
    single = _config(tiny_neural_gaffer_dir).setup(device="cpu")
    split = _config(tiny_neural_gaffer_dir, devices=("cpu", "cpu"), max_batch_size=1).setup(device="cpu")
    assert len(split.devices) == 2
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(3)]  # noqa: E731
    whole = single.relight(images, masks, cameras, env, generator=gens())
    parts = split.relight(images, masks, cameras, env, generator=gens())
    alone = single.relight(images[1:2], masks[1:2], cameras[1:2], env, generator=gens()[1:2])
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, whole[1:2], atol=1e-5, rtol=0)


def test_refine_changes_the_image_less_for_smaller_t_star(prior, views) -> None:
    images, masks, cameras = views
    env = sun_envmap((0.0, 1.0, 0.5))
    # t* = 0: the VAE round trip of the view (composited on white, at the model's resolution and back).
    square, layout = to_square(composite(images, masks, (1.0, 1.0, 1.0)), RESOLUTION, 1.0)
    with torch.no_grad():
        latents = prior.vae.encode(square * 2 - 1).latent_dist.mode()
        round_trip = (prior.vae.decode(latents).sample / 2 + 0.5).clamp(0, 1)
    from relight3d.priors.base import from_square

    expected = composite(from_square(round_trip, layout), masks, images)
    torch.testing.assert_close(prior.refine(images, masks, cameras, env, 0.0), expected, atol=1e-5, rtol=0)
    # More noise, more change; t* = 1 is relight from pure noise.
    prior.config.num_inference_steps = 10
    try:
        changes = [
            (prior.refine(images, masks, cameras, env, t, generator=0) - expected).abs().mean().item()
            for t in (0.1, 0.5, 0.9)
        ]
        assert changes[0] < changes[1] < changes[2], changes
        torch.testing.assert_close(
            prior.refine(images, masks, cameras, env, 1.0, generator=5),
            prior.relight(images, masks, cameras, env, generator=5),
        )
        # Stage 2 conditions on the original views, not on the renders being refined.
        original = images.flip(-1)  # other colours
        conditioned = prior.refine(images, masks, cameras, env, 0.5, condition_images=original, generator=0)
        assert (conditioned - prior.refine(images, masks, cameras, env, 0.5, generator=0)).abs().max() > 1e-3
    finally:
        prior.config.num_inference_steps = 2


def test_unet_sees_noisy_image_hdr_ldr_latents_and_zeroed_unconditional_branch(prior, views) -> None:
    images, masks, cameras = views
    env = sun_envmap((0.5, 1.0, 0.2))
    calls = []
    unet = prior.unet
    original = unet.forward

    def spy(sample, timestep, encoder_hidden_states, **kwargs):
        calls.append((sample.clone(), encoder_hidden_states.clone()))
        return original(sample, timestep, encoder_hidden_states, **kwargs)

    unet.forward = spy
    try:
        prior.relight(images, masks, cameras, env, generator=0)
    finally:
        unet.forward = original
    assert len(calls) == 2  # two DDIM steps, both branches in one call each
    sample, context = calls[0]
    b = images.shape[0]
    assert sample.shape == (2 * b, 16, RESOLUTION // 2, RESOLUTION // 2) and context.shape == (2 * b, 1, 16)
    # Unconditional half: every condition zeroed; both halves share the noisy latent.
    assert torch.equal(sample[:b, 4:], torch.zeros_like(sample[:b, 4:]))
    assert torch.equal(context[:b], torch.zeros_like(context[:b]))
    assert torch.equal(sample[:b, :4], sample[b:, :4])
    # Conditional half: unscaled VAE means of the image, the HDR map and the LDR map, in that order.
    square, _ = to_square(composite(images, masks, (1.0, 1.0, 1.0)), RESOLUTION, 1.0)
    hdr, ldr = encode_lighting_images(prior.prepare_envmap(env), cameras, RESOLUTION)
    with torch.no_grad():
        for k, picture in enumerate((square, hdr, ldr)):
            mean = prior.vae.encode(picture * 2 - 1).latent_dist.mean
            torch.testing.assert_close(sample[b:, 4 + 4 * k : 8 + 4 * k], mean, atol=1e-5, rtol=0)
        pixels = torch.nn.functional.interpolate(square * 2 - 1, size=(16, 16), mode="bicubic", align_corners=True)
        pixels = ((pixels + 1) / 2 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        embeds = prior.image_encoder(pixel_values=pixels).image_embeds
    torch.testing.assert_close(context[b:, 0], embeds, atol=1e-5, rtol=0)


def test_lighting_images_follow_the_camera(views) -> None:
    _, _, cameras = views
    from relight3d.lighting import hdr_encoding, rotate_envmap_to_camera

    env = sun_envmap((1.0, 0.0, 0.3))
    hdr, ldr = encode_lighting_images(env, cameras, 8, quantize=False)
    local = rotate_envmap_to_camera(env, cameras[1])
    expected = torch.nn.functional.interpolate(
        hdr_encoding(local).permute(2, 0, 1)[None], size=(8, 8), mode="bilinear", antialias=True
    )
    torch.testing.assert_close(hdr[1:2], expected)
    assert hdr.max() <= 1.0 and ldr.min() >= 0.0
    assert (hdr[0] - hdr[1]).abs().max() > 0.1  # a different camera sees the sun elsewhere


def test_wrong_unet_channels_is_a_one_line_error_naming_the_checkpoint(tmp_path: Path) -> None:
    components = neural_gaffer_components()
    components["unet"] = tiny_unet(8)
    folder = save_components(tmp_path / "zero123_like", **components)
    with pytest.raises(PriorError) as info:
        _config(folder).setup()
    message = str(info.value)
    assert "\n" not in message and str(folder / "unet") in message and "8 input channels" in message


def test_missing_checkpoint_and_bad_resolution_are_one_line_errors(tmp_path: Path, tiny_neural_gaffer_dir) -> None:
    with pytest.raises(PriorError, match="checkpoint folder not found"):
        _config(tmp_path / "nowhere").setup()
    with pytest.raises(PriorError, match="model_path is not set"):
        NeuralGafferPriorConfig().setup()
    with pytest.raises(PriorError) as info:
        _config(tiny_neural_gaffer_dir, resolution=18).setup()
    assert "multiple of 4" in str(info.value) and "\n" not in str(info.value)
    assert _config(tiny_neural_gaffer_dir, resolution=24).setup().resolution == 24


def test_accelerate_checkpoint_on_a_zero123_base_equals_the_converted_folder(
    tmp_path: Path, tiny_neural_gaffer_dir: Path, views
) -> None:
    from safetensors.torch import save_file

    components = neural_gaffer_components()
    gaffer_unet = components["unet"]
    base = dict(components, unet=tiny_unet(8))
    base_dir = save_components(tmp_path / "zero123", **base)
    checkpoint = tmp_path / "checkpoint-80000"
    checkpoint.mkdir()
    save_file({k: v.contiguous() for k, v in gaffer_unet.state_dict().items()}, str(checkpoint / "model.safetensors"))
    images, masks, cameras = views
    env = sun_envmap((0.0, 1.0, 0.5))
    from_checkpoint = _config(base_dir, unet_checkpoint=checkpoint).setup()
    reference = _config(tiny_neural_gaffer_dir).setup()
    torch.testing.assert_close(
        from_checkpoint.relight(images, masks, cameras, env), reference.relight(images, masks, cameras, env)
    )
    converted = from_checkpoint.save_pretrained(tmp_path / "converted")
    assert _config(converted).setup().unet.config.in_channels == 16


def test_from_components_and_sds_loss(views) -> None:
    images, masks, cameras = views
    prior = NeuralGafferPrior.from_components(
        NeuralGafferPriorConfig(num_inference_steps=2, envmap_height=16), **neural_gaffer_components()
    )
    rendered = images.clone().requires_grad_(True)
    out = prior.sds_loss(rendered, masks, cameras, sun_envmap((0.0, 1.0, 0.5)), generator=0)
    assert set(out) == {"loss_sds", "grad_norm"}
    # loss = 0.5 |g|^2 / b by construction of the stop-gradient target.
    torch.testing.assert_close(out["loss_sds"], 0.5 * out["grad_norm"] ** 2 / images.shape[0])
    out["loss_sds"].backward()
    assert rendered.grad is not None and torch.isfinite(rendered.grad).all() and rendered.grad.abs().sum() > 0
    # Only object pixels (and their resize footprint) receive gradient: the background is replaced by white.
    assert rendered.grad[0, 0, 0].abs().sum() == 0


REAL_WEIGHTS = os.environ.get("RELIGHT3D_NEURAL_GAFFER_PATH")


@pytest.mark.slow
@pytest.mark.skipif(
    not REAL_WEIGHTS,
    reason="set RELIGHT3D_NEURAL_GAFFER_PATH to Neural Gaffer's weights (a converted folder, or the Zero123-XL base "
    "with RELIGHT3D_NEURAL_GAFFER_UNET_CHECKPOINT=<checkpoint-80000>); none are available here",
)
def test_real_weights_follow_the_light() -> None:
    checkpoint = os.environ.get("RELIGHT3D_NEURAL_GAFFER_UNET_CHECKPOINT")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = NeuralGafferPriorConfig(
        model_path=Path(REAL_WEIGHTS), unet_checkpoint=Path(checkpoint) if checkpoint else None, num_inference_steps=20
    )
    prior = config.setup(device=device)
    assert prior.resolution == 256

    images, masks = disc_views(2, 256, 256)
    images = composite(torch.full_like(images, 0.7), masks, (1.0, 1.0, 1.0))  # a grey disc
    cameras = orbit_cameras(2)
    bright = prior.relight(images, masks, cameras, sun_envmap((0.0, 0.0, 1.0), 64, sun=50.0, sky=1.0))
    dark = prior.relight(images, masks, cameras, sun_envmap((0.0, 0.0, 1.0), 64, sun=0.5, sky=0.02))
    inside = masks.expand_as(images) > 0.5
    assert bright[inside].mean() > dark[inside].mean() + 0.05
