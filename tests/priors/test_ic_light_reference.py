"""IC-Light fc against references written from its ``gradio_demo.py`` with the same tiny random weights.

* One denoising step written by hand: the noisy latent first and the foreground latent (VAE posterior mean times the
  scaling factor) second along channels, the demo's prompt encoding, CFG ``uncond + s (cond - uncond)`` with the
  negative prompt as the unconditional branch, then the sampler's update written out from its formula.
* The public preset's whole relighting (first pass + high-resolution pass) against diffusers' pipelines driven the
  way the demo drives them: its ``DPMSolverMultistepScheduler`` arguments, its UNet hook (``concat_conds`` passed
  through ``cross_attention_kwargs``), its img2img steps rule, its high-resolution pass.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from prior_fixtures import orbit_cameras, seeded, sun_envmap

from relight3d.errors import ConfigError
from relight3d.priors.base import PriorViews
from relight3d.priors.diffusion.testing import RESOLUTION
from relight3d.priors.ic_light import ICLightPrior, ICLightPriorConfig
from relight3d.priors.registry import PRIORS, prior_config

PRIOR_CONFIG = ICLightPriorConfig
"""The prior under test (conftest.py's ``tiny_prior_config`` builds it)."""

SIDE = RESOLUTION * 3 // 2
"""The tiny model's high-resolution side at scale 1.5: round(16 * 1.5 / 4) * 4 (the VAE x UNet downsampling is 4)."""


def demo_scheduler():
    """``gradio_demo.py``'s ``dpmpp_2m_sde_karras_scheduler``, argument for argument."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, algorithm_type="sde-dpmsolver++",
        use_karras_sigmas=True, steps_offset=1,
    )  # fmt: skip


def demo_prompt_embeds(prior: ICLightPrior, text: str) -> torch.Tensor:
    """The demo's ``encode_prompt_inner``: 75-token chunks, each [bos] + tokens + [eos] padded with eos to 77, the
    chunks' last hidden states concatenated along the sequence."""
    tokenizer, encoder = prior.components.tokenizer, prior.components.text_encoder
    length, chunk = tokenizer.model_max_length, tokenizer.model_max_length - 2
    ids = tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"]
    chunks = [[tokenizer.bos_token_id, *ids[i : i + chunk], tokenizer.eos_token_id] for i in range(0, len(ids), chunk)]
    padded = [c + [tokenizer.eos_token_id] * (length - len(c)) for c in chunks]
    with torch.no_grad():
        hidden = encoder(torch.tensor(padded)).last_hidden_state
    return torch.cat(list(hidden), dim=0)[None]


def demo_latents(prior: ICLightPrior, images: torch.Tensor) -> torch.Tensor:
    """``vae.encode(x).latent_dist.mode() * scaling_factor`` of channel-first images in [0, 1]."""
    vae = prior.components.vae
    with torch.no_grad():
        return vae.encode(images * 2 - 1).latent_dist.mode() * vae.config.scaling_factor


def demo_decode(prior: ICLightPrior, latents: torch.Tensor) -> torch.Tensor:
    vae = prior.components.vae
    with torch.no_grad():
        return (vae.decode(latents / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)


def _inputs(side: int = RESOLUTION):
    """Two views filling the frame (masks of ones: no compositing), their cameras and a light from +Y."""
    images = torch.rand(2, side, side, 3, generator=torch.Generator().manual_seed(4))
    return images, torch.ones(2, side, side, 1), orbit_cameras(2), sun_envmap((0.2, 1.0, 0.6))


def _text_embeds(prior: ICLightPrior, cameras, env):
    prompts = prior.prompts(cameras, prior.prepare_envmap(env))
    conds = torch.cat([demo_prompt_embeds(prior, p) for p in prompts])
    unconds = demo_prompt_embeds(prior, prior.config.negative_prompt).expand_as(conds)
    return conds, unconds


@pytest.mark.parametrize("sampler", ["dpm++-2m-sde-karras", "ddim"])
def test_one_step_equals_the_hand_written_step(sampler: str, tiny_prior_config) -> None:
    schedule = "ic-light-demo" if sampler.startswith("dpm") else "checkpoint"
    prior = tiny_prior_config(
        num_inference_steps=1, lighting_preview_strength=1.0, scheduler=sampler, noise_schedule=schedule
    ).setup()
    images, masks, cameras, env = _inputs()
    ours = prior.relight(PriorViews(images, masks, cameras, env, generator=seeded(1, 2)))

    unet, scale = prior.components.unet, prior.config.guidance_scale
    noise = torch.stack([torch.randn(4, 8, 8, generator=g) for g in seeded(1, 2)])  # the views' first draws
    foreground = demo_latents(prior, images.permute(0, 3, 1, 2))
    conds, unconds = _text_embeds(prior, cameras, env)
    if sampler.startswith("dpm"):  # one Karras step: sigma_max of the demo's linear betas, at t = 999, down to 0
        alpha_bar = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64), 0)
        t = 999
    else:  # one DDIM step of the checkpoint's scaled-linear schedule: "leading" spacing + steps_offset 1 gives t = 1
        alpha_bar = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2, 0)
        t = 1
    with torch.no_grad():
        x = torch.cat([noise, foreground], dim=1)  # noisy latent first, foreground latent second
        eps_u = unet(x, t, encoder_hidden_states=unconds).sample.double()
        eps_c = unet(x, t, encoder_hidden_states=conds).sample.double()
    eps = eps_u + scale * (eps_c - eps_u)
    if sampler.startswith("dpm"):
        sigma = math.sqrt((1 - alpha_bar[t]) / alpha_bar[t])
        alpha_t, sigma_t = 1 / math.sqrt(sigma**2 + 1), sigma / math.sqrt(sigma**2 + 1)
        latents = (noise - sigma_t * eps) / alpha_t  # DPM-Solver++ to sigma 0 returns its data prediction
    else:
        a, a_prev = alpha_bar[t], alpha_bar[0]  # set_alpha_to_one=False: the last step ends at alpha_bar[0]
        x0 = (noise - (1 - a).sqrt() * eps) / a.sqrt()
        latents = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    theirs = demo_decode(prior, latents.float()).permute(0, 2, 3, 1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def demo_unet(unet):
    """``gradio_demo.py``'s ``hooked_unet_forward`` on a copy of the 8-channel UNet (whose config, as in the demo,
    still says 4 channels, so that the pipelines make 4-channel latents)."""
    unet = copy.deepcopy(unet)
    original = unet.forward

    def hooked_unet_forward(sample, timestep, encoder_hidden_states, **kwargs):
        c_concat = kwargs["cross_attention_kwargs"]["concat_conds"].to(sample)
        c_concat = torch.cat([c_concat] * (sample.shape[0] // c_concat.shape[0]), dim=0)
        kwargs["cross_attention_kwargs"] = {}
        return original(torch.cat([sample, c_concat], dim=1), timestep, encoder_hidden_states, **kwargs)

    unet.forward = hooked_unet_forward
    unet.register_to_config(in_channels=4)
    return unet


def _resized(images: torch.Tensor, side: int) -> torch.Tensor:
    """relight3d's resampling (antialiased bicubic on floats; the demo: PIL Lanczos on 8-bit images)."""
    return F.interpolate(images, size=(side, side), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


@pytest.mark.parametrize("preference", [0.9, 1.0])
def test_public_preset_equals_the_demo_pipelines(preference: float, tiny_checkpoint) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    config = ICLightPriorConfig.public_preset()
    config.model_path, config.envmap_height, config.resolution = tiny_checkpoint(ICLightPriorConfig), 16, RESOLUTION
    config.num_inference_steps, config.lighting_preview_strength = 3, preference
    config.vae_dtype = "float32"  # the demo's bfloat16 VAE is a CUDA placement; compared in float32 here
    prior = config.setup()
    assert (prior.base_resolution, prior.resolution) == (RESOLUTION, SIDE)
    images, masks, cameras, env = _inputs(SIDE)
    ours = prior.relight(PriorViews(images, masks, cameras, env, generator=seeded(7, 8)))

    parts, steps, cfg = prior.components, config.num_inference_steps, config.guidance_scale
    pipes = [
        cls(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=demo_unet(parts.unet),
            scheduler=demo_scheduler(), safety_checker=None, requires_safety_checker=False, feature_extractor=None,
            image_encoder=None)
        for cls in (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline)
    ]  # fmt: skip
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
    t2i_pipe, i2i_pipe = pipes
    conds, unconds = _text_embeds(prior, cameras, env)
    fg = images.permute(0, 3, 1, 2)
    rng = seeded(7, 8)
    common = dict(prompt_embeds=conds, negative_prompt_embeds=unconds, generator=rng, output_type="latent",
                  guidance_scale=cfg)  # fmt: skip
    low_fg = demo_latents(prior, _resized(fg, RESOLUTION))
    with torch.no_grad():
        if preference >= 1.0:  # the demo's lighting preference "None"
            latents = t2i_pipe(
                width=RESOLUTION, height=RESOLUTION, num_inference_steps=steps,
                cross_attention_kwargs={"concat_conds": low_fg}, **common,
            ).images  # fmt: skip
        else:
            bg_latent = demo_latents(prior, prior.lighting_previews(cameras, prior.prepare_envmap(env), RESOLUTION))
            latents = i2i_pipe(
                image=bg_latent, strength=preference, num_inference_steps=int(round(steps / preference)),
                cross_attention_kwargs={"concat_conds": low_fg}, **common,
            ).images  # fmt: skip
        pixels = _resized(demo_decode(prior, latents), SIDE)  # highres_scale 1.5
        latents = i2i_pipe(
            image=demo_latents(prior, pixels), strength=0.5, num_inference_steps=int(round(steps / 0.5)),
            cross_attention_kwargs={"concat_conds": demo_latents(prior, fg)}, **common,
        ).images  # fmt: skip
    theirs = demo_decode(prior, latents).permute(0, 2, 3, 1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_public_preset_is_registered_and_builds_the_demo_scheduler(tiny_prior_config) -> None:
    preset = prior_config("ic-light-public")
    assert PRIORS["ic-light-public"] == ICLightPriorConfig.public_preset
    expected = dict(
        scheduler="dpm++-2m-sde-karras", noise_schedule="ic-light-demo", num_inference_steps=25, guidance_scale=2.0,
        resolution=512, lighting_preview_strength=0.9, highres_pass=True, highres_scale=1.5, highres_denoise=0.5,
        added_prompt="best quality", negative_prompt="lowres, bad anatomy, bad hands, cropped, worst quality",
        background_color=(0.5, 0.5, 0.5), vae_dtype="bfloat16",
    )  # fmt: skip
    assert {k: getattr(preset, k) for k in expected} == expected
    default = ICLightPriorConfig()
    assert (default.scheduler, default.noise_schedule, default.highres_pass) == ("ddim", "checkpoint", False)

    prior = tiny_prior_config(scheduler=preset.scheduler, noise_schedule=preset.noise_schedule).setup()
    built, reference = prior.components.scheduler, demo_scheduler()
    assert type(built) is type(reference)
    assert {k: v for k, v in built.config.items() if not k.startswith("_")} == {
        k: v for k, v in reference.config.items() if not k.startswith("_")
    }
    assert built.config.beta_schedule == "linear"  # the demo passes none: diffusers' default, not SD1.5's
    ddim = tiny_prior_config().setup().components.scheduler
    assert type(ddim).__name__ == "DDIMScheduler" and ddim.config.beta_schedule == "scaled_linear"
    with pytest.raises(ConfigError, match=r"^ICLightPriorConfig.noise_schedule: the demo builds no 'euler' sampler"):
        tiny_prior_config(scheduler="euler", noise_schedule="ic-light-demo").setup()
    with pytest.raises(ConfigError, match=r"^ICLightPriorConfig.highres_denoise: must be in \(0, 1\]"):
        tiny_prior_config(highres_denoise=0.0).setup()


def test_score_distillation_does_not_depend_on_the_sampler(tiny_prior_config) -> None:
    """SDS noises with the training schedule ``q(z_t | z)``, whichever sampler the preset picks."""
    images, masks, cameras, env = _inputs()
    losses = []
    for sampler in ("ddim", "dpm++-2m-sde-karras"):
        prior = tiny_prior_config(scheduler=sampler).setup()
        views = PriorViews(images.clone().requires_grad_(True), masks, cameras, env, generator=seeded(3, 4))
        losses.append(prior.sds_loss(views)["loss_sds"].detach())
    torch.testing.assert_close(losses[1], losses[0], atol=0, rtol=0)
