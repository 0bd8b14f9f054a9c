"""The prior contract's shared pieces: randomness, resizing, input checks, lighting descriptions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from prior_fixtures import camera_at, sun_envmap

from relight3d.errors import ConfigError, DataError
from relight3d.priors.base import (
    PriorError,
    PriorViews,
    RelightingPriorConfig,
    composite,
    from_square,
    make_generators,
    to_square,
)
from relight3d.priors.lighting_description import (
    LightingSummary,
    environment_background,
    lighting_preview,
    summarize_lighting,
)
from relight3d.priors.neural_gaffer import NeuralGafferPrior, NeuralGafferPriorConfig


def test_generators_give_each_view_its_own_reproducible_stream() -> None:
    a, b = make_generators(5, 3), make_generators(5, 3)
    draws_a = [torch.randn(4, generator=g) for g in a]
    assert all(torch.equal(x, torch.randn(4, generator=g)) for x, g in zip(draws_a, b))
    assert not torch.equal(draws_a[0], draws_a[1])
    assert not torch.equal(draws_a[0], torch.randn(4, generator=make_generators(6, 1)[0]))
    # A shared generator advances: two calls differ, and replaying its seed replays both.
    shared = torch.Generator().manual_seed(0)
    first, second = make_generators(shared, 2), make_generators(shared, 2)
    assert not torch.equal(torch.randn(3, generator=first[0]), torch.randn(3, generator=second[0]))
    replay = torch.Generator().manual_seed(0)
    assert torch.equal(
        torch.randn(3, generator=make_generators(replay, 2)[0]),
        torch.randn(3, generator=make_generators(torch.Generator().manual_seed(0), 2)[0]),
    )
    with pytest.raises(ValueError):
        make_generators([torch.Generator()], 2)


@pytest.mark.parametrize("shape", [(20, 30), (30, 20), (16, 16)])
def test_to_square_pads_centres_and_round_trips(shape) -> None:
    h, w = shape
    images = torch.rand(2, h, w, 3)
    square, layout = to_square(images, 64, fill=(1.0, 0.0, 0.5))
    assert square.shape == (2, 3, 64, 64)
    if h != w:  # the padded border has the fill colour
        corner = square[:, :, 0, 0] if h < w else square[:, :, 32, 0]
        torch.testing.assert_close(corner, torch.tensor([[1.0, 0.0, 0.5]] * 2))
    # Upsampling then downsampling back (antialiased) returns a smooth version of the input of the same size.
    back = from_square(square, layout)
    assert back.shape == images.shape
    smooth = torch.nn.functional.avg_pool2d(images.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1)
    inner = (slice(None), slice(2, -2), slice(2, -2))
    assert (back - images)[inner].abs().mean() < (smooth - images)[inner].abs().mean() + 0.05
    same, same_layout = to_square(images[:, :16, :16], 16)
    assert torch.equal(from_square(same, same_layout), images[:, :16, :16])


def test_composite() -> None:
    images = torch.full((1, 2, 2, 3), 0.2)
    masks = torch.tensor([1.0, 0.0, 0.5, 0.0]).reshape(1, 2, 2, 1)
    out = composite(images, masks, (1.0, 1.0, 1.0))
    torch.testing.assert_close(out[0, :, :, 0], torch.tensor([[0.2, 1.0], [0.6, 1.0]]))


def test_prior_error_is_a_one_line_data_error() -> None:
    err = PriorError(Path("/weights/ng"), "UNet takes 8 input channels")
    assert isinstance(err, DataError) and str(err) == "/weights/ng: UNet takes 8 input channels"
    with pytest.raises(ConfigError, match="^RelightingPriorConfig: is the abstract prior config"):
        RelightingPriorConfig().setup()


def test_input_checks_are_one_line_prior_errors(tiny_checkpoint) -> None:
    folder = tiny_checkpoint(NeuralGafferPriorConfig)
    prior: NeuralGafferPrior = NeuralGafferPriorConfig(model_path=folder).setup()
    images, masks = torch.rand(2, 8, 8, 3), torch.ones(2, 8, 8, 1)
    cams, env = torch.eye(4)[:3].expand(2, 3, 4), torch.ones(8, 16, 3)
    for bad in (
        dict(images=torch.rand(2, 8, 8, 4)),
        dict(masks=torch.ones(2, 8, 8)),
        dict(cameras=torch.eye(4)[:3].expand(3, 3, 4)),
        dict(target_envmap=torch.ones(8, 16)),
        dict(images=torch.full((2, 8, 8, 3), float("nan"))),
    ):
        args = dict(images=images, masks=masks, cameras=cams, target_envmap=env) | bad
        with pytest.raises(PriorError) as info:
            prior.relight(PriorViews(**args))
        assert str(folder) in str(info.value) and "\n" not in str(info.value)


def test_lighting_summary_reads_direction_hardness_and_colour() -> None:
    camera = camera_at((0.0, -3.0, 0.0))  # looks along world +Y: right = +X, up = +Z
    sun = summarize_lighting(sun_envmap((-1.0, 0.0, 1.0), sky=0.0, colour=(1.0, 0.75, 0.5)), camera)
    x, y, z = sun.direction
    assert x == pytest.approx(-math.sqrt(0.5), abs=0.05) and y == pytest.approx(math.sqrt(0.5), abs=0.05)
    assert abs(z) < 0.05 and sun.directionality > 0.9
    assert sun.describe() == "hard orange light from the upper left"
    uniform = summarize_lighting(torch.ones(16, 32, 3), camera)
    assert uniform.directionality < 0.01 and uniform.describe() == "even white light"
    sky = torch.ones(16, 32, 3) * torch.tensor([0.7, 0.8, 1.0])
    sky[8:] = 0.0  # only the upper hemisphere glows: directionality 1/2
    overcast = summarize_lighting(sky, camera)
    assert overcast.directionality == pytest.approx(0.5, abs=0.02)
    assert overcast.describe() == "cool light from above"
    assert LightingSummary((0.0, 0.0, -1.0), 0.2, (1.0, 1.0, 1.0)).describe() == "soft white light from behind"


def test_preview_and_background_follow_the_camera() -> None:
    camera = camera_at((0.0, -3.0, 0.0))
    env = sun_envmap((1.0, 0.0, 0.0), sky=0.05)  # to the camera's right
    preview = lighting_preview(env, camera, 16)
    assert preview.shape == (16, 16, 3) and preview.max() == pytest.approx(1.0, abs=1e-4)
    assert preview[:, 12:].mean() > preview[:, :4].mean() + 0.2
    behind_object = environment_background(sun_envmap((0.0, 1.0, 0.0), sky=0.05), camera, 16, 50.0)
    elsewhere = environment_background(env, camera, 16, 50.0)
    assert behind_object.mean() > 0.9 and elsewhere.mean() < 0.3
