"""DECA's SH lighting convention: closed forms for uniform and clamped-cosine skies, the hand formula of
``add_SHlight`` on a sphere, agreement with relight3d's irradiance, and the least-squares fit."""

from __future__ import annotations

import math

import pytest
import torch

from relight3d.lighting.deca_sh import (
    deca_frame_rotation,
    deca_sh_basis,
    deca_sh_from_envmap,
    deca_sh_from_sh,
    deca_shading,
    fit_deca_sh,
    sh_from_deca_sh,
)
from relight3d.lighting.equirect import envmap_directions
from relight3d.lighting.spherical_harmonics import sh_irradiance

# DECA's constant_factor, evaluated by hand (decimal values of the expressions in decalib/utils/renderer.py).
C0 = 0.28209479177  # 1 / sqrt(4 pi)
C1 = 1.02332670795  # (2 pi / 3) sqrt(3 / (4 pi))
C4 = 0.85808553081  # (pi / 4) 3 sqrt(5 / (12 pi))
C7 = 0.42904276540  # (pi / 4) (3 / 2) sqrt(5 / (12 pi))
C8 = 0.24770795610  # (pi / 4) (1 / 2) sqrt(5 / (4 pi))


def _unit(values) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float64)
    return v / v.norm()


def _sphere_normals(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=generator, dtype=torch.float64), dim=-1)


def _cosine_lobe(direction: torch.Tensor, height: int = 64) -> torch.Tensor:
    dirs = envmap_directions(height, 2 * height, dtype=torch.float64)
    return (dirs @ direction).clamp_min(0.0)[..., None].expand(-1, -1, 3).contiguous()


def test_uniform_sky_gives_only_the_dc_coefficient() -> None:
    """Radiance L everywhere: L_00 = L sqrt(4 pi); DECA (reflected) row 0 = L_00, shading = C0 * L_00 = L."""
    radiance = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    light = deca_sh_from_envmap(radiance.expand(32, 64, 3).contiguous())
    assert torch.allclose(light[0], radiance * math.sqrt(4 * math.pi), rtol=1e-12, atol=0)
    assert light[1:].abs().max() < 1e-12
    shading = deca_shading(_sphere_normals(5), light)
    assert torch.allclose(shading, radiance.expand(5, 3), rtol=1e-12, atol=0)
    irradiance_light = deca_sh_from_envmap(radiance.expand(32, 64, 3).contiguous(), shading="irradiance")
    assert torch.allclose(irradiance_light[0], math.pi * math.sqrt(4 * math.pi) * radiance, rtol=1e-12, atol=0)


def test_clamped_cosine_lobe_gives_band_one_along_its_direction() -> None:
    """L(w) = max(0, d . w) has L_lm = A_l Y_lm(d) (Funk-Hecke with A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4), so
    DECA (reflected: rows 1..8 divided by pi) has row 0 = pi / sqrt(4 pi) = sqrt(pi) / 2 and
    rows 1..3 = (2/3) sqrt(3 / (4 pi)) d = d / sqrt(3 pi); band 2 = C_k b_k(d) / pi. The 64 x 128 map treats each
    pixel as constant radiance, so the values carry a discretisation error (measured 5e-5, second order)."""
    d = _unit([0.3, -0.5, 0.8])
    light = deca_sh_from_envmap(_cosine_lobe(d))[:, 0]
    assert light[0].item() == pytest.approx(math.sqrt(math.pi) / 2, abs=2e-4)
    assert torch.allclose(light[1:4], d / math.sqrt(3 * math.pi), rtol=0, atol=2e-4)
    x, y, z = d.tolist()
    band2 = torch.tensor([C4 * x * y, C4 * x * z, C4 * y * z, C7 * (x * x - y * y), C8 * (3 * z * z - 1)])
    assert torch.allclose(light[4:], band2.to(light) / math.pi, rtol=0, atol=2e-4)


def test_rotation_into_the_deca_frame_moves_the_lobe() -> None:
    """A camera at -Y looking at the origin (along +Y, up +Z): DECA's x = world +X, y = +Z, z (towards the viewer)
    = -Y. A lobe from world -Y (the camera side) must light DECA's +z: band 1 = (0, 0, 1) / sqrt(3 pi); one from
    world +X lights DECA's +x."""
    camera_to_world = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -3], [0, 1, 0, 0]], dtype=torch.float64)
    world_to_deca = deca_frame_rotation(camera_to_world)
    for world, deca in (([0.0, -1.0, 0.0], [0.0, 0.0, 1.0]), ([1.0, 0.0, 0.0], [1.0, 0.0, 0.0])):
        light = deca_sh_from_envmap(_cosine_lobe(_unit(world)), world_to_deca)[:, 0]
        assert torch.allclose(light[1:4], _unit(deca) / math.sqrt(3 * math.pi), rtol=0, atol=2e-4), (world, light)
        assert light[0].item() == pytest.approx(math.sqrt(math.pi) / 2, abs=2e-4)


def test_sphere_shading_matches_the_add_shlight_hand_formula() -> None:
    light = torch.arange(27, dtype=torch.float64).reshape(9, 3) / 27.0 - 0.3  # DECA's 27 numbers, row-major
    cases = {
        (0.0, 0.0, 1.0): lambda l: C0 * l[0] + C1 * l[3] + C8 * 2 * l[8],  # noqa: E741
        (1.0, 0.0, 0.0): lambda l: C0 * l[0] + C1 * l[1] + C7 * l[7] - C8 * l[8],  # noqa: E741
        (0.0, -1.0, 0.0): lambda l: C0 * l[0] - C1 * l[2] - C7 * l[7] - C8 * l[8],  # noqa: E741
        (0.6, 0.0, 0.8): lambda l: (  # noqa: E741
            C0 * l[0]
            + C1 * (0.6 * l[1] + 0.8 * l[3])
            + C4 * 0.48 * l[5]
            + C7 * 0.36 * l[7]
            + C8 * (3 * 0.64 - 1) * l[8]
        ),
    }
    normals = torch.tensor(list(cases), dtype=torch.float64)
    shading = deca_shading(normals, light)
    for row, formula in enumerate(cases.values()):
        assert torch.allclose(shading[row], formula(light), rtol=0, atol=1e-10), (row, shading[row], formula(light))


def test_conversion_agrees_with_relight3d_irradiance() -> None:
    generator = torch.Generator().manual_seed(3)
    coeffs = torch.randn(9, 3, generator=generator, dtype=torch.float64)
    normals = _sphere_normals(40)
    reflected = deca_shading(normals, deca_sh_from_sh(coeffs))
    assert torch.allclose(reflected, sh_irradiance(coeffs, normals) / math.pi, rtol=0, atol=1e-12)
    irradiance = deca_shading(normals, deca_sh_from_sh(coeffs, shading="irradiance"))
    assert torch.allclose(irradiance, sh_irradiance(coeffs, normals), rtol=0, atol=1e-12)
    assert torch.allclose(sh_from_deca_sh(deca_sh_from_sh(coeffs)), coeffs, rtol=0, atol=1e-14)
    basis = deca_sh_basis(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert basis.tolist() == pytest.approx([C0, 0, 0, C1, 0, 0, 0, 0, 2 * C8], abs=1e-10)


def test_least_squares_fit_recovers_a_light_from_noisy_sphere_shading() -> None:
    """Front hemisphere of a sphere (what a face shows), 2000 normals, shading + N(0, 0.01^2) noise.

    Least squares with 9 unknowns from N samples has coefficient error ~ sigma * sqrt(diag((B^T B)^-1)); on a
    hemisphere the band-2 rows are worse conditioned (measured max error ~0.01 for sigma = 0.01), and the residual
    RMS equals the noise level (0.01) to within sampling error."""
    true = torch.tensor(
        [[1.8, 1.6, 1.5], [0.4, 0.3, 0.3], [0.5, 0.5, 0.4], [0.7, 0.6, 0.6], [0.05, 0.0, 0.02],
         [-0.1, -0.1, -0.05], [0.08, 0.05, 0.05], [0.1, 0.1, 0.1], [-0.05, -0.04, -0.04]],
        dtype=torch.float64,
    )  # fmt: skip
    normals = _sphere_normals(4000, seed=1)
    mask = normals[:, 2] > 0.0
    generator = torch.Generator().manual_seed(4)
    shading = deca_shading(normals, true) + 0.01 * torch.randn(4000, 3, generator=generator, dtype=torch.float64)
    fit = fit_deca_sh(normals, shading, mask=mask)
    assert fit.num_samples == int(mask.sum())
    error = (fit.coeffs - true).abs().max().item()
    assert error < 0.03, error
    assert torch.allclose(fit.rms_residual, torch.full((3,), 0.01, dtype=torch.float64), rtol=0.1, atol=0)
    print(f"DECA SH fit: max coefficient error {error:.4f}, residual RMS {fit.rms_residual.tolist()}")

    albedo = 0.3 + 0.6 * torch.rand(4000, 3, generator=generator, dtype=torch.float64)
    image = albedo * deca_shading(normals, true)
    exact = fit_deca_sh(normals, image, mask=mask, albedo=albedo)
    assert torch.allclose(exact.coeffs, true, rtol=0, atol=1e-10)
    assert exact.rms_residual.max() < 1e-12


def test_fit_refuses_too_few_samples() -> None:
    normals = _sphere_normals(8)
    with pytest.raises(ValueError, match="at least 9"):
        fit_deca_sh(normals, torch.ones(8, 3, dtype=torch.float64))
