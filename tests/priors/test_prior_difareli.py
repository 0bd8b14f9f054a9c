"""The DiFaReli prior: DDIM invert-then-decode round trip, light entering only through the shading reference, the
reference against DECA's closed form on an analytic sphere, the source light fitted from the image, checkpoint and
face-code files.

All model runs use :func:`tiny_difareli_folder` (32 px, random weights, the output layer scaled by 0.1) in float64
on one thread, with few DDIM steps. Measured (float64, 5 steps, two 32 px sphere views): the same-light round trip
reconstructs to 5.8e-7 max-abs error with 14 fixed-point iterations per inverse step (2.0e-5 with 10, 3.3e-8 with
18; 0.60 with plain inversion, whose error is first order in the step); another pair of maps moves the in-mask
result by up to 0.16.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Tuple

import pytest
import torch

from relight3d.geometry import look_at
from relight3d.lighting import linear_to_srgb
from relight3d.lighting.deca_sh import deca_frame_rotation, deca_sh_from_envmap, deca_shading
from relight3d.priors.base import PriorError, PriorViews
from relight3d.priors.difareli import (
    CODE_DIM,
    CODE_PARTS,
    REFERENCE_ALBEDO,
    SETTINGS_FILE,
    TINY_SETTINGS,
    DiFaReliPrior,
    DiFaReliPriorConfig,
    difareli_scheduler,
    tiny_difareli_folder,
)
from relight3d.priors.difareli_unet import difareli_eps
from relight3d.priors.diffusion.inversion import ddim_decode, ddim_invert

pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

RES = 32
STEPS = 5
FIXED_POINT = 14
"""Fixed-point iterations per inverse step of the round trip (the iteration contracts by ~0.4 per pass here)."""


# --- fixtures --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_difareli_folder(tmp_path_factory.mktemp("difareli"), seed=0)


def _prior(folder: Path, **fields) -> DiFaReliPrior:
    settings = {"dtype": "float64", "num_inference_steps": STEPS, "fixed_point_iterations": 0, **fields}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the neutral-codes warning (tested on its own)
        return DiFaReliPriorConfig(model_path=folder, **settings).setup()


@pytest.fixture(scope="module")
def prior(tiny_folder: Path) -> DiFaReliPrior:
    return _prior(tiny_folder)


def _sphere(cameras: torch.Tensor, res: int = RES) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A unit sphere filling 87% of each view, seen orthographically: ``(world normals [b, res, res, 3], camera-frame
    normals (= DECA frame) [b, res, res, 3], masks [b, res, res, 1])``, float64; normals are (0, 0, 1) outside."""
    v, u = torch.meshgrid(torch.linspace(-1.15, 1.15, res), torch.linspace(-1.15, 1.15, res), indexing="ij")
    u, v = u.double(), v.double()
    inside = u * u + v * v < 1.0
    z = torch.sqrt((1.0 - u * u - v * v).clamp_min(0.0))
    camera_frame = torch.stack([u, -v, z], dim=-1)  # image row down = camera y down
    camera_frame = torch.where(inside[..., None], camera_frame, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    camera_frame = camera_frame.expand(cameras.shape[0], res, res, 3)
    world = torch.einsum("bij,bhwj->bhwi", cameras[:, :3, :3].double(), camera_frame)
    masks = inside.double()[None, ..., None].expand(cameras.shape[0], res, res, 1)
    return world, camera_frame, masks


def _cameras() -> torch.Tensor:
    return look_at(torch.tensor([[0.0, -4.0, 1.0], [3.0, 2.0, -1.5]], dtype=torch.float64))


def _envmap(seed: int) -> torch.Tensor:
    return torch.rand(8, 16, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1


def _images(b: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, RES, RES, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.8 + 0.1


def _views(images, masks, cameras, normals, target, source=None) -> PriorViews:
    gbuffers = {"normals": normals, "accumulation": masks}
    return PriorViews(images, masks, cameras, target, gbuffers=gbuffers, source_envmap=source)


# --- DDIM round trip and where light enters ---------------------------------------------------------------------------
def test_same_light_round_trip_reconstructs_the_input(tiny_folder: Path) -> None:
    """DDIM's defining property: decoding the inverted views under the conditions they were inverted under gives
    them back (exactly, with fixed-point inversion; the whole pipeline of squaring, conditions and compositing
    included)."""
    prior = _prior(tiny_folder, fixed_point_iterations=FIXED_POINT)
    cameras = _cameras()
    world, _, masks = _sphere(cameras)
    images = _images(2)
    env = _envmap(1)
    relit = prior.relight(_views(images, masks, cameras, world, env, source=env))
    error = float((relit.double() - images).abs().max())
    assert error < 5e-6, f"invert-then-decode under the same light is off by {error:.3g} (measured 5.8e-7)"


def test_relight_inverts_under_the_source_and_decodes_under_the_target(prior: DiFaReliPrior) -> None:
    """The wiring, rebuilt by hand from the notes: condition image ``cat([(180/255) shading * mask, faceseg])`` with
    ``faceseg = (1 - m)(2 image - 1) - m``, the image as ``2 x - 1``, invert under the source, decode under the
    target, composite. Swapping the lights, the channels or the sign of faceseg's head would fail it."""
    cameras = _cameras()[:1]
    world, camera_frame, masks = _sphere(cameras)
    images = _images(1, seed=8)
    lights = torch.randn(2, 1, 9, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 0.3
    lights[:, :, 0] += 2.0
    views = _views(images, masks, cameras, world, _envmap(0))
    relit = prior.relight_with_lights(views, lights[0], lights[1])

    def condition(light: torch.Tensor) -> torch.Tensor:
        reference = REFERENCE_ALBEDO * deca_shading(camera_frame[0], light[0]) * masks[0]
        faceseg = (1.0 - masks[0]) * (2.0 * images[0] - 1.0) - masks[0]
        return torch.cat([reference, faceseg], dim=-1).permute(2, 0, 1)[None]

    scheduler = difareli_scheduler()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(scheduler.alphas_cumprod.double(), torch.cumprod(1.0 - betas, 0), rtol=1e-5)
    codes = torch.zeros(1, CODE_DIM, dtype=torch.float64)
    with torch.no_grad():
        source = difareli_eps(prior.unet, prior.encoder, codes, condition(lights[0]))
        target = difareli_eps(prior.unet, prior.encoder, codes, condition(lights[1]))
        x0 = (2.0 * images.permute(0, 3, 1, 2) - 1.0).to(prior.device)
        decoded = ddim_decode(ddim_invert(x0, source, scheduler, STEPS), target, scheduler, STEPS).cpu()
    expected = masks * ((decoded + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1) + (1.0 - masks) * images
    assert torch.allclose(relit.double(), expected, atol=1e-6), float((relit.double() - expected).abs().max())
    assert float((relit.double() - images).abs().max()) > 1e-2


def test_light_enters_only_through_the_shading_reference(prior: DiFaReliPrior) -> None:
    """A flat patch facing the camera (normal (0, 0, 1) in DECA's frame) sees only DECA rows 0 (constant), 3 (z) and
    8 (3z^2 - 1): changing the other rows leaves its reference, and so the whole output, bit-identical (the light is
    not among DiFaReli's codes), while changing row 3 changes the reference and the output inside the mask. The
    networks' attention and GroupNorm mix every pixel, so the change is not confined to the pixels whose reference
    changed; outside the mask the result is the input by compositing."""
    camera = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 3.0]]])  # looks down -z
    masks = torch.zeros(1, RES, RES, 1, dtype=torch.float64)
    masks[:, 8:24, 6:26] = 1.0
    normals = torch.zeros(1, RES, RES, 3, dtype=torch.float64)
    normals[..., 2] = 1.0
    views = _views(_images(1, seed=3), masks, camera, normals, _envmap(0))
    light = torch.zeros(1, 9, 3, dtype=torch.float64)
    light[:, 0], light[:, 3] = 2.0, 0.5
    unseen = light.clone()
    unseen[:, [1, 2, 4, 5, 6, 7]] = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    seen = light.clone()
    seen[:, 3] = -0.5
    geometry = prior.geometry(views)
    assert torch.equal(prior.shading_references(geometry, light), prior.shading_references(geometry, unseen))
    source = light * 0.8
    base = prior.relight_with_lights(views, source, light)
    assert torch.equal(prior.relight_with_lights(views, source, unseen), base)
    moved = (prior.relight_with_lights(views, source, seen) - base).abs()
    inside = masks[..., 0] > 0.5
    assert float(moved[inside].max()) > 1e-2, "a visible change of the light did not change the result"
    assert float(moved[~inside].max()) == 0.0
    assert torch.equal(base[~inside], views.images[~inside].float())


# --- the shading reference and the lights on an analytic sphere -------------------------------------------------------
def test_sphere_references_match_deca_closed_form_and_relight_composites(prior: DiFaReliPrior) -> None:
    cameras = _cameras()
    world, camera_frame, masks = _sphere(cameras)
    images = _images(2, seed=7)
    source_env, target_env = _envmap(2), _envmap(3).flip(1)
    views = _views(images, masks, cameras, world, target_env, source=source_env)
    geometry = prior.geometry(views)
    assert torch.allclose(geometry.normals, camera_frame, atol=1e-12)
    assert torch.equal(geometry.alpha, masks)  # every visible sphere normal faces the camera

    # hand closed form of DECA's basis (F_0 = 1 / sqrt(4 pi), F_3 = (2 pi / 3) sqrt(3 / (4 pi))) for rows 0 and 3
    light = torch.zeros(2, 9, 3, dtype=torch.float64)
    light[:, 0] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    light[:, 3] = torch.tensor([0.5, -0.25, 1.0], dtype=torch.float64)
    f0, f3 = 1.0 / math.sqrt(4.0 * math.pi), (2.0 * math.pi / 3.0) * math.sqrt(3.0 / (4.0 * math.pi))
    z = camera_frame[..., 2:]
    expected = REFERENCE_ALBEDO * (f0 * light[:, None, None, 0] + f3 * z * light[:, None, None, 3]) * masks
    assert torch.allclose(prior.shading_references(geometry, light), expected, atol=1e-12)

    # the lights of the maps, per view in its DECA frame, and their references by deca_shading
    source, target = prior.lights(views)
    for i in range(2):
        frame = deca_frame_rotation(cameras[i]).double()
        assert torch.allclose(target[i], deca_sh_from_envmap(target_env, frame), atol=1e-10)
        assert torch.allclose(source[i], deca_sh_from_envmap(source_env, frame), atol=1e-10)
        reference = REFERENCE_ALBEDO * deca_shading(camera_frame[i], target[i]) * masks[i]
        assert torch.allclose(prior.shading_references(geometry, target)[i], reference, atol=1e-12)
    assert not torch.allclose(target[0], target[1], atol=1e-3)  # the two cameras see the map differently

    relit = prior.relight(views)
    assert relit.shape == images.shape and relit.dtype == torch.float32
    assert torch.isfinite(relit).all() and float(relit.min()) >= 0.0 and float(relit.max()) <= 1.0
    outside = masks[..., 0] < 0.5
    assert torch.equal(relit[outside], images[outside].float())
    assert float((relit.double() - images).abs()[~outside].max()) > 1e-2


def test_back_facing_normals_are_left_out(prior: DiFaReliPrior) -> None:
    """DiFaReli's pos_mask keeps DECA-frame normals with z > -0.15; the accumulation scales the rest."""
    camera = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 3.0]]], dtype=torch.float64)
    z = torch.tensor([-0.5, -0.2, -0.1, 0.3], dtype=torch.float64)
    normals = torch.stack([torch.sqrt(1.0 - z * z), torch.zeros_like(z), z], dim=-1).expand(1, 4, 4, 3)
    accumulation = torch.full((1, 4, 4, 1), 0.75, dtype=torch.float64)
    views = PriorViews(
        _images(1)[:, :4, :4],
        torch.ones_like(accumulation),
        camera,
        _envmap(0),
        gbuffers={"normals": normals, "accumulation": accumulation},
    )
    geometry = prior.geometry(views)
    expected = torch.tensor([0.0, 0.0, 0.75, 0.75], dtype=torch.float64).expand(1, 4, 4)
    assert torch.equal(geometry.alpha[..., 0], expected)
    assert torch.equal(geometry.fit_mask, expected > 0.5)
    light = torch.zeros(1, 9, 3, dtype=torch.float64)
    light[:, 0] = 1.0
    reference = prior.shading_references(geometry, light)
    assert bool((reference[..., :2, :] == 0.0).all())  # columns facing away: background 0
    assert torch.allclose(
        reference[..., 2:, :], torch.full_like(reference[..., 2:, :], REFERENCE_ALBEDO * 0.75 / math.sqrt(4 * math.pi))
    )


@pytest.mark.parametrize("fit_space", ["srgb", "linear"])
def test_source_light_is_fitted_from_the_image(tiny_folder: Path, fit_space: str) -> None:
    cameras = _cameras()
    world, camera_frame, masks = _sphere(cameras)
    known = torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * 0.05
    known[:, 0] += 1.6  # shading around 0.45 +- 0.2: inside [0, 1] on the whole sphere
    shading = torch.stack([REFERENCE_ALBEDO * deca_shading(camera_frame[i], known[i]) for i in range(2)])
    assert float(shading.min()) > 0.0 and float(shading.max()) < 1.0
    if fit_space == "linear":
        shading = linear_to_srgb(shading)
    images = torch.where(masks > 0.5, shading, _images(2, seed=12))  # noise outside the mask must not count
    prior = _prior(tiny_folder, fit_space=fit_space, num_inference_steps=1, fixed_point_iterations=0)
    source, _ = prior.lights(_views(images, masks, cameras, world, _envmap(0)))
    assert torch.allclose(source, known, atol=1e-7), float((source - known).abs().max())


# --- checkpoints ------------------------------------------------------------------------------------------------------
def test_tiny_folder_round_trip(tiny_folder: Path) -> None:
    prior = _prior(tiny_folder, dtype="float32", num_inference_steps=2, fixed_point_iterations=0)
    assert prior.resolution == TINY_SETTINGS.image_size == RES  # from difareli_settings.json
    assert prior.settings == TINY_SETTINGS
    unet_file, encoder_file = "ImgCond_ema_0.9999_000001.pt", "ImgEncoder_ema_0.9999_000001.pt"
    saved = torch.load(tiny_folder / unet_file, weights_only=True)
    assert all(torch.equal(saved[k], v.cpu()) for k, v in prior.unet.state_dict().items())
    again = torch.load(tiny_difareli_folder(tiny_folder.parent / "again", seed=0) / encoder_file, weights_only=True)
    assert all(torch.equal(again[k], v.cpu()) for k, v in prior.encoder.state_dict().items())  # seeded
    cameras = _cameras()[:1]
    world, _, masks = _sphere(cameras, res=24)
    images = torch.rand(1, 24, 20, 3, generator=torch.Generator().manual_seed(2))  # not square: padded and cropped
    views = _views(images, masks[:, :, :20].float(), cameras, world[:, :, :20].float(), _envmap(4).float())
    relit = prior.relight(views)
    assert relit.shape == images.shape and torch.isfinite(relit).all()
    refined = prior.refine(views, 0.5)
    assert refined.shape == images.shape and torch.equal(prior.refine(views, 0.0), images)
    assert torch.equal(prior.refine(views, 0.5), refined)  # the same seed, the same noise
    other = prior.refine(dataclasses.replace(views, generator=1), 0.5)
    assert not torch.equal(other, refined)
    outside = views.masks[..., 0] < 0.5
    assert torch.equal(relit[outside], images[outside]) and torch.equal(refined[outside], images[outside])


def _one_line_error(config: DiFaReliPriorConfig) -> str:
    with pytest.raises(PriorError) as info:
        config.setup()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_and_wrong_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert str(missing) in _one_line_error(DiFaReliPriorConfig(model_path=missing))

    folder = tiny_difareli_folder(tmp_path / "tiny", seed=1)
    encoder_file = folder / "ImgEncoder_ema_0.9999_000001.pt"
    state = torch.load(encoder_file, weights_only=True)
    encoder_file.unlink()
    message = _one_line_error(DiFaReliPriorConfig(model_path=folder))
    assert str(folder) in message and "ImgEncoder" in message

    key = "input_blocks.0.0.weight"
    state[key] = torch.zeros(8, 5, 3, 3)
    torch.save(state, encoder_file)
    message = _one_line_error(DiFaReliPriorConfig(model_path=folder))
    assert str(encoder_file) in message and key in message and "(8, 5, 3, 3)" in message

    (folder / SETTINGS_FILE).write_text(json.dumps({"image_size": 32, "channel_multiplier": [1, 2]}))
    message = _one_line_error(DiFaReliPriorConfig(model_path=folder))
    assert str(folder / SETTINGS_FILE) in message and "channel_multiplier" in message


# --- face codes -------------------------------------------------------------------------------------------------------
def _code_values(seed: int, rows: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = lambda size: (rows, size) if rows else (size,)  # noqa: E731
    return {name: torch.randn(shape(size), generator=generator, dtype=torch.float64) for name, size in CODE_PARTS}


def test_face_codes_are_read_and_checked(tiny_folder: Path, tmp_path: Path) -> None:
    import numpy as np

    values = _code_values(0)
    npz = tmp_path / "codes.npz"
    np.savez(npz, **{k: v.numpy() for k, v in values.items()})
    prior = _prior(tiny_folder, codes_path=npz)
    codes = prior.codes(2)
    assert codes.shape == (2, CODE_DIM)
    assert torch.equal(codes[1], torch.cat([values[name] for name, _ in CODE_PARTS]))

    per_view = _code_values(1, rows=2)
    document = {("faceemb" if k == "arcface" else k): v.tolist() for k, v in per_view.items()}
    path = tmp_path / "codes.json"
    path.write_text(json.dumps(document))
    prior_json = _prior(tiny_folder, codes_path=path)
    assert torch.equal(prior_json.codes(2)[:, 159:671], per_view["arcface"])  # after shape, pose, exp, cam
    with pytest.raises(PriorError, match="codes for 2 views, the call has 3"):
        prior_json.codes(3)

    for name, value in (("shape", [0.0] * 99), ("shadow", [0.0, 1.0]), ("jaw", [0.0])):
        bad = tmp_path / f"bad_{name}.json"
        bad.write_text(json.dumps({**{k: v.tolist() for k, v in values.items()}, name: value}))
        with pytest.raises(PriorError) as info:
            _prior(tiny_folder, codes_path=bad)
        assert str(bad) in str(info.value) and name in str(info.value) and "\n" not in str(info.value)

    # the codes reach the UNet: other codes, another result
    cameras = _cameras()[:1]
    world, _, masks = _sphere(cameras)
    views = _views(_images(1), masks, cameras, world, _envmap(6), source=_envmap(7))
    quick = {"num_inference_steps": 2, "fixed_point_iterations": 0}
    assert not torch.equal(
        _prior(tiny_folder, codes_path=npz, **quick).relight(views), _prior(tiny_folder, **quick).relight(views)
    )


def test_neutral_codes_warn_once(tiny_folder: Path) -> None:
    cameras = _cameras()[:1]
    world, _, masks = _sphere(cameras)
    views = _views(_images(1), masks, cameras, world, _envmap(6), source=_envmap(7))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prior = DiFaReliPriorConfig(model_path=tiny_folder, num_inference_steps=1).setup()
        prior.relight(views)
        prior.relight(views)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len([m for m in messages if "codes_path" in m]) == 1, messages
    assert torch.equal(prior.codes(3), torch.zeros(3, CODE_DIM, dtype=torch.float64))
