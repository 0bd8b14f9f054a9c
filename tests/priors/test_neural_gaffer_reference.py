"""Neural Gaffer's public inference, re-written here from the authors' code (not from relight3d's), and the adapter's
public preset checked against it with tiny random weights.

The references follow, line for line, ``dataset/dataset_relighting_objaverse_3d.py`` (``generate_envir_map_dir``,
``get_light``, ``rotate_and_preprcess_envir_map`` and the torchvision transforms of ``neural_gaffer_inference_*.py``)
and ``pipeline_neural_gaffer.py`` (``Neural_Gaffer_StableDiffusionPipeline.__call__`` with one generator per image,
all seeded with 42, as ``neural_gaffer_inference_real_data.py`` calls it).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from prior_fixtures import orbit_cameras, sun_envmap

from relight3d.priors.base import PriorViews
from relight3d.priors.diffusion.components import IMAGE_PARTS, DiffusionComponents
from relight3d.priors.diffusion.testing import RESOLUTION, clip_image_encoder, tiny_components
from relight3d.priors.neural_gaffer import NeuralGafferPrior, NeuralGafferPriorConfig, encode_lighting_images

STEPS = 3
SEED = 42  # parse_args.py's --seed; every image of a batch gets a generator seeded with it


# --- the public preprocessing ---------------------------------------------------------------------------------------
def public_lighting_images(envir_map: np.ndarray, c2w: torch.Tensor, resolution: int):
    """``RelightingObjaverseData.rotate_and_preprcess_envir_map`` + ``process_im``: (LDR, HDR) in [-1, 1]."""
    from PIL import Image
    from torchvision import transforms

    rotation = c2w[:3, :3].double().numpy()
    aligned_RT = np.concatenate([rotation.T, -rotation.T @ c2w[:3, 3:].double().numpy()], axis=1)  # Blender w2c
    env_h, env_w = envir_map.shape[0], envir_map.shape[1]
    # generate_envir_map_dir
    lat_step_size = np.pi / env_h
    lng_step_size = 2 * np.pi / env_w
    theta, phi = torch.meshgrid(
        [
            torch.linspace(np.pi / 2 - 0.5 * lat_step_size, -np.pi / 2 + 0.5 * lat_step_size, env_h),
            torch.linspace(np.pi - 0.5 * lng_step_size, -np.pi + 0.5 * lng_step_size, env_w),
        ],
        indexing="ij",
    )
    view_dirs = torch.stack(
        [torch.cos(phi) * torch.cos(theta), torch.sin(phi) * torch.cos(theta), torch.sin(theta)], dim=-1
    ).view(-1, 3)
    axis_aligned_transform = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # Blender's convention
    axis_aligned_R = axis_aligned_transform @ aligned_RT[:3, :3]
    view_dirs_world = view_dirs @ axis_aligned_R  # a float64 tensor (torch @ ndarray)
    # get_light
    envir = torch.from_numpy(envir_map).permute(2, 0, 1).unsqueeze(0)
    incident_dir = view_dirs_world.clip(-1, 1)
    theta = torch.arccos(incident_dir[:, 2]).reshape(-1) - 1e-6
    phi = torch.atan2(incident_dir[:, 1], incident_dir[:, 0]).reshape(-1)
    query_y = ((theta / np.pi) * 2 - 1).clip(-1, 1)
    query_x = (-phi / np.pi).clip(-1, 1)
    grid = torch.stack((query_x, query_y)).permute(1, 0).unsqueeze(0).unsqueeze(0).float()
    light_rgbs = F.grid_sample(envir, grid, align_corners=True).squeeze().permute(1, 0).reshape(-1, 3)
    rotated_hdr_rgb = np.array(light_rgbs.reshape(env_h, env_w, 3), dtype=np.float32)
    # the encodings, 8-bit images, and the inference script's transforms
    envir_map_ldr = rotated_hdr_rgb.clip(0, 1) ** (1 / 2.2)
    envir_map_hdr = np.log1p(10 * rotated_hdr_rgb)
    envir_map_hdr = envir_map_hdr / np.max(envir_map_hdr)
    tform = transforms.Compose(
        [
            transforms.Resize((resolution, resolution), antialias=True),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ]
    )
    ldr = tform(Image.fromarray(np.uint8(envir_map_ldr * 255.0)).convert("RGB"))
    hdr = tform(Image.fromarray(np.uint8(envir_map_hdr * 255.0)).convert("RGB"))
    return ldr, hdr


def test_public_lighting_images_equal_neural_gaffers_bit_for_bit() -> None:
    generator = torch.Generator().manual_seed(3)
    world = (torch.rand(32, 64, 3, generator=generator) ** 6 * 40.0).float()  # HDR, a few bright texels
    world[5, 40] = 300.0
    cameras = torch.cat([orbit_cameras(3, height=1.7), orbit_cameras(2, radius=2.0, height=-1.2)])
    for size in (16, 24):
        hdr, ldr = encode_lighting_images(world, cameras, size, method="public")
        for i, c2w in enumerate(cameras):
            their_ldr, their_hdr = public_lighting_images(world.numpy(), c2w, size)
            assert torch.equal(hdr[i] * 2 - 1, their_hdr), (size, i)
            assert torch.equal(ldr[i] * 2 - 1, their_ldr), (size, i)
    ours, _ = encode_lighting_images(world, cameras, 24)
    assert (ours - hdr).abs().max() > 0  # relight3d's default arithmetic is not the public one


# --- the public pipeline --------------------------------------------------------------------------------------------
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def public_pipeline(parts: DiffusionComponents, input_imgs, first_map, second_map, variant: str) -> torch.Tensor:
    """``Neural_Gaffer_StableDiffusionPipeline.__call__`` (inputs in [-1, 1], channel first; returns [b, h, w, 3] in
    [0, 1]). ``variant`` breaks one thing on purpose; "public" is the pipeline as released."""
    from diffusers import DDIMScheduler

    unet, vae, image_encoder = parts.unet, parts.vae, parts.image_encoder
    # __init__ forces steps_offset = 1 and clip_sample = False
    scheduler = DDIMScheduler.from_config({**parts.scheduler.config, "steps_offset": 1, "clip_sample": False})
    batch_size, _, height, width = input_imgs.shape
    generator = [torch.Generator().manual_seed(SEED) for _ in range(batch_size)]
    guidance_scale = 3.0
    # 3. _encode_image_without_pose: CLIP_preprocess, image_embeds, zeros first
    size = image_encoder.config.image_size
    x = F.interpolate(input_imgs.to(torch.float32), (size, size), mode="bicubic", align_corners=True)
    x = ((x + 1.0) / 2.0 - CLIP_MEAN) / CLIP_STD
    image_embeddings = image_encoder(x).image_embeds.unsqueeze(1)
    if variant == "embedding-kept-in-uncond":
        prompt_embeds = torch.cat([image_embeddings, image_embeddings])
    else:
        prompt_embeds = torch.cat([torch.zeros_like(image_embeddings), image_embeddings])
    # 4. timesteps
    scheduler.set_timesteps(STEPS)
    # 5. prepare_latents: randn_tensor with one generator per image
    vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    shape = (1, 4, height // vae_scale_factor, width // vae_scale_factor)
    noise = lambda: torch.cat([torch.randn(shape, generator=g) for g in generator])  # noqa: E731

    # 6. prepare_img_latents: a posterior sample per image, zeros first
    def prepare_img_latents(image):
        if variant == "posterior-mean":
            init_latents = vae.encode(image).latent_dist.mode()
        else:
            init_latents = torch.cat(
                [vae.encode(image[i : i + 1]).latent_dist.sample(generator[i]) for i in range(batch_size)]
            )
        uncond = init_latents if variant == "latents-kept-in-uncond" else torch.zeros_like(init_latents)
        return torch.cat([uncond, init_latents])

    if variant == "noise-after-latents":
        img_latents, first, second = (prepare_img_latents(x) for x in (input_imgs, first_map, second_map))
        latents = noise() * scheduler.init_noise_sigma
    else:
        latents = noise() * scheduler.init_noise_sigma
        img_latents, first, second = (prepare_img_latents(x) for x in (input_imgs, first_map, second_map))
    if variant == "maps-swapped":
        first, second = second, first
    # 7. denoising loop
    for t in scheduler.timesteps:
        latent_model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        latent_model_input = torch.cat([latent_model_input, img_latents, first, second], dim=1)
        noise_pred = unet(latent_model_input, t, encoder_hidden_states=prompt_embeds).sample
        noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
        noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        latents = scheduler.step(noise_pred, t, latents, eta=0.0, generator=generator, return_dict=False)[0]
    # 8. decode_latents
    image = vae.decode(latents / vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def tiny_gaffer() -> DiffusionComponents:
    """A tiny Neural Gaffer whose CLIP encoder takes 24 px images (so the bicubic resize is exercised)."""
    parts = tiny_components(IMAGE_PARTS, 16, seed=5)
    torch.manual_seed(6)
    parts.image_encoder = clip_image_encoder(image_size=24)
    return parts


@pytest.fixture(scope="module")
def scene():
    generator = torch.Generator().manual_seed(11)
    images = torch.rand(2, RESOLUTION, RESOLUTION, 3, generator=generator)
    masks = torch.ones(2, RESOLUTION, RESOLUTION, 1)
    envmap = sun_envmap((0.3, 1.0, 0.6), 8, sun=30.0, sky=0.4)  # HDR and LDR images differ a lot
    return images, masks, orbit_cameras(2, height=0.8), envmap


@pytest.fixture(scope="module")
def adapter_output(tiny_gaffer, scene) -> torch.Tensor:
    config = replace(NeuralGafferPriorConfig.public_preset(), num_inference_steps=STEPS)
    prior = NeuralGafferPrior.from_components(config, **tiny_gaffer.parts())
    images, masks, cameras, envmap = scene
    with torch.no_grad():
        return prior.relight(PriorViews(images, masks, cameras, envmap))


@pytest.mark.parametrize(
    "variant",
    [
        "public",
        "maps-swapped",  # HDR and LDR latents in each other's channels
        "latents-kept-in-uncond",  # IC-Light's unconditional branch: only the embedding dropped
        "embedding-kept-in-uncond",
        "posterior-mean",  # condition latents not sampled (the pipeline with a single generator)
        "noise-after-latents",  # the generators consumed in another order
    ],
)
def test_public_preset_equals_the_public_pipeline(tiny_gaffer, scene, adapter_output, variant: str) -> None:
    images, _, cameras, envmap = scene
    maps = [public_lighting_images(envmap.numpy(), c2w, RESOLUTION) for c2w in cameras]
    ldr = torch.stack([m[0] for m in maps])
    hdr = torch.stack([m[1] for m in maps])
    with torch.no_grad():
        theirs = public_pipeline(tiny_gaffer, images.permute(0, 3, 1, 2) * 2 - 1, hdr, ldr, variant)
    difference = float((adapter_output - theirs).abs().max())
    if variant == "public":
        assert difference < 1e-4, f"adapter differs from the public pipeline by {difference}"
    else:
        assert difference > 1e-3, f"a reference with {variant} matches the adapter ({difference}): the test is blind"
