"""DDIM inversion and decoding: agreement with ``scheduler.step``, closed forms for linear noise models, and
invert-then-decode reconstruction with a tiny random ``UNet2DModel`` in float64.

Why the UNet test wraps the random network. A random UNet used *as* eps is not a denoiser: decoding then maps
``x_T`` to ``x_0`` roughly as ``x_T / sqrt(alphas_cumprod[t_top])`` (x ~150 for the linear schedule), so any
inversion error is blown up by that factor and the test measures the network's chaos, not the inversion. A trained
model's eps contains the part that undoes this (for data of variance ``v``, the Bayes-optimal
``eps*(x, t) = sqrt(1 - a) x / (a v + 1 - a)``); the test model is that part plus ``0.1 *`` a random UNet (with a
condition channel), which keeps the UNet's nonlinearity and the realistic conditioning of the flow.

Measured (float64, linear schedule, 1000 training steps, "leading" spacing, 1 x 3 x 8 x 8 input in [-0.5, 0.5]):
plain inversion reconstructs to 0.135 (20 steps) and 0.058 (50 steps) max-abs error: first order in the step, as
DDIM inversion evaluates eps one state early (see ``relight3d.priors.diffusion.inversion``). With 12 fixed-point
iterations per step, 20 steps reconstruct to 1.3e-7 (geometric: 6e-4 / 8e-6 / 1.3e-7 after 4 / 8 / 12).
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch

from relight3d.priors.diffusion.inversion import ddim_decode, ddim_grid, ddim_invert
from relight3d.priors.diffusion.sampling import denoise

pytest.importorskip("diffusers")

DATA_VARIANCE = 0.25


pytestmark = pytest.mark.usefixtures("one_thread")


def _scheduler(**overrides):
    from diffusers import DDIMScheduler

    settings = {"num_train_timesteps": 1000, "beta_schedule": "linear", "clip_sample": False, **overrides}
    return DDIMScheduler(**settings)


def _tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return (
        UNet2DModel(
            sample_size=8,
            in_channels=4,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(8, 8),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
        )
        .double()
        .eval()
    )


def _denoiser_like_eps(unet, scheduler, condition: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Bayes-optimal eps for Gaussian data of variance ``DATA_VARIANCE`` plus ``0.1 *`` a random UNet (module doc)."""
    alphas = scheduler.alphas_cumprod.to(torch.float64)

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alphas[int(t)]
        extra = torch.full_like(x[:, :1], condition)
        with torch.no_grad():
            learned = unet(torch.cat([x, extra], dim=1), t).sample
        return (1 - a).sqrt() * x / (a * DATA_VARIANCE + 1 - a) + 0.1 * learned

    return eps


def _image() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(1, 3, 8, 8, generator=generator, dtype=torch.float64) * 2 - 1) * 0.5


def test_decode_is_scheduler_step_with_eta_zero() -> None:
    unet, scheduler = _tiny_unet(), _scheduler()
    eps = _denoiser_like_eps(unet, scheduler, 0.5)
    x_T = torch.randn(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ours = ddim_decode(x_T, eps, scheduler, 10)
    scheduler.set_timesteps(10)
    reference = denoise(scheduler, x_T, scheduler.timesteps, eps, eta=0.0)
    # diffusers forms its coefficients from float32 alphas_cumprod; ours are float64 (same values, less rounding).
    assert torch.allclose(ours, reference, rtol=0, atol=1e-5), (ours - reference).abs().max()


def test_grid_is_shared_and_levels_follow_the_scheduler_rule() -> None:
    scheduler = _scheduler()
    grid = ddim_grid(scheduler, 10)
    assert grid.timesteps.tolist() == list(range(900, -1, -100))
    cumprod = scheduler.alphas_cumprod.to(torch.float64)
    assert torch.equal(grid.alphas, cumprod[grid.timesteps])
    assert torch.equal(grid.alphas_prev[:-1], cumprod[grid.timesteps[1:]])  # decoding step k lands on step k+1's level
    assert float(grid.alphas_prev[-1]) == 1.0  # set_alpha_to_one


def _linear_eps(scale: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda x, t: scale * x


def test_linear_eps_model_matches_the_discrete_closed_form() -> None:
    """eps = lam * x makes every step a scalar multiplication; derive both directions by hand.

    Decode step k (levels a -> a'): x' = g_k x with g_k = sqrt(a'/a) + sqrt(a') (s' - s) lam, s = sqrt((1-a)/a).
    Plain inversion evaluates eps at the *input* x', so x = h_k x' with h_k = sqrt(a/a') + sqrt(a) (s - s') lam;
    exact inversion solves x = sqrt(a/a') x' + sqrt(a) (s - s') lam x, i.e. x = x' / g_k.
    """
    lam, steps = 0.3, 8
    scheduler = _scheduler()
    grid = ddim_grid(scheduler, steps)
    g, h = 1.0, 1.0
    for a, a_prev in zip(grid.alphas.tolist(), grid.alphas_prev.tolist()):
        s, s_prev = math.sqrt((1 - a) / a), math.sqrt((1 - a_prev) / a_prev)
        g *= math.sqrt(a_prev / a) + math.sqrt(a_prev) * (s_prev - s) * lam
        h *= math.sqrt(a / a_prev) + math.sqrt(a) * (s - s_prev) * lam
    x0 = _image()
    plain = ddim_invert(x0, _linear_eps(lam), scheduler, steps)
    assert torch.allclose(plain, h * x0, rtol=1e-12, atol=0)
    exact = ddim_invert(x0, _linear_eps(lam), scheduler, steps, fixed_point_iterations=60)
    assert torch.allclose(exact, x0 / g, rtol=1e-10, atol=0)
    assert torch.allclose(ddim_decode(exact, _linear_eps(lam), scheduler, steps), x0, rtol=0, atol=1e-12)
    assert torch.allclose(ddim_decode(x0, _linear_eps(lam), scheduler, steps), g * x0, rtol=1e-12, atol=0)


def test_gaussian_optimal_eps_inverts_to_the_probability_flow_closed_form() -> None:
    """For data N(0, v) the optimal eps is sqrt(1-a) x / (a v + 1 - a); with xbar = x / sqrt(a) and
    s = sqrt((1-a)/a) the DDIM ODE is d xbar / ds = s xbar / (v + s^2), so xbar = x0 sqrt(v + s^2) / sqrt(v) and
    x_T = x0 sqrt(a_T v + 1 - a_T) / sqrt(v). DDIM is Euler's method on this ODE: error first order in the step."""
    v = DATA_VARIANCE
    x0 = _image()
    errors = []
    for steps in (100, 1000):
        scheduler = _scheduler(timestep_spacing="trailing")  # top timestep 999 for every step count
        alphas = scheduler.alphas_cumprod.to(torch.float64)
        a_top = float(alphas[999])

        def eps(x: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor = alphas) -> torch.Tensor:
            a = alphas[int(t)]
            return (1 - a).sqrt() * x / (a * v + 1 - a)

        x_T = ddim_invert(x0, eps, scheduler, steps)
        expected = x0 * math.sqrt(a_top * v + 1 - a_top) / math.sqrt(v)
        errors.append(float(((x_T - expected).abs() / expected.abs()).max()))
    assert errors[1] < 2e-3, errors
    assert errors[1] < errors[0] / 5, errors  # 10x the steps: ~10x smaller (first order)


def test_invert_then_decode_reconstructs_with_a_tiny_unet() -> None:
    unet, scheduler = _tiny_unet(), _scheduler()
    eps = _denoiser_like_eps(unet, scheduler, 0.5)
    x0 = _image()
    plain = {
        n: float((ddim_decode(ddim_invert(x0, eps, scheduler, n), eps, scheduler, n) - x0).abs().max())
        for n in (20, 50)
    }
    assert plain[50] < 0.1 and plain[50] < 0.6 * plain[20], plain  # measured 0.058 and 0.135: first order
    x_T = ddim_invert(x0, eps, scheduler, 20, fixed_point_iterations=12)
    error = float((ddim_decode(x_T, eps, scheduler, 20) - x0).abs().max())
    assert error < 1e-6, error  # measured 1.3e-7


def test_decoding_under_another_condition_changes_the_output() -> None:
    unet, scheduler = _tiny_unet(), _scheduler()
    source, target = _denoiser_like_eps(unet, scheduler, 0.5), _denoiser_like_eps(unet, scheduler, -0.5)
    x0 = _image()
    x_T = ddim_invert(x0, source, scheduler, 20, fixed_point_iterations=12)
    same = ddim_decode(x_T, source, scheduler, 20)
    other = ddim_decode(x_T, target, scheduler, 20)
    assert float((same - x0).abs().max()) < 1e-6
    assert float((other - x0).abs().max()) > 0.05  # measured 0.29


def test_trajectory_callback_and_refusals() -> None:
    scheduler = _scheduler()
    seen = []
    ddim_invert(_image(), _linear_eps(0.1), scheduler, 5, on_step=lambda k, t, x: seen.append(int(t)))
    assert seen == [0, 200, 400, 600, 800]  # the decoding grid, walked upwards
    with pytest.raises(ValueError, match="clip"):
        ddim_invert(_image(), _linear_eps(0.1), _scheduler(clip_sample=True), 5)
    with pytest.raises(ValueError, match="epsilon"):
        ddim_decode(_image(), _linear_eps(0.1), _scheduler(prediction_type="v_prediction"), 5)
