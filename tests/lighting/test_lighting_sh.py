"""Spherical harmonics: basis, projection and Ramamoorthi-Hanrahan irradiance against closed forms and quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relight3d.lighting import envmap_directions, envmap_solid_angles, eval_sh, project_sh, sh_basis, sh_irradiance
from relight3d.lighting.spherical_harmonics import cosine_lobe_band_factors


def _unit(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=generator, dtype=torch.float64), dim=-1)


def test_low_order_basis_matches_the_textbook_polynomials() -> None:
    d = _unit(50)
    x, y, z = d.unbind(-1)
    expected = torch.stack(
        [
            torch.full_like(x, 0.5 / math.sqrt(math.pi)),
            math.sqrt(3 / (4 * math.pi)) * y,
            math.sqrt(3 / (4 * math.pi)) * z,
            math.sqrt(3 / (4 * math.pi)) * x,
            0.5 * math.sqrt(15 / math.pi) * x * y,
            0.5 * math.sqrt(15 / math.pi) * y * z,
            0.25 * math.sqrt(5 / math.pi) * (3 * z * z - 1),
            0.5 * math.sqrt(15 / math.pi) * x * z,
            0.25 * math.sqrt(15 / math.pi) * (x * x - y * y),
        ],
        dim=-1,
    )
    assert torch.allclose(sh_basis(d, 2), expected, atol=1e-12)


@pytest.mark.parametrize("order", [2, 4, 6])
def test_basis_is_orthonormal(order: int) -> None:
    height, width = 96, 192
    n = (order + 1) ** 2
    basis = sh_basis(envmap_directions(height, width, dtype=torch.float64), order).reshape(-1, n)
    weights = envmap_solid_angles(height, width, dtype=torch.float64).reshape(-1, 1)
    gram = basis.T @ (basis * weights)
    assert torch.allclose(gram, torch.eye(n, dtype=torch.float64), atol=2e-3)


def test_constant_map_projects_to_the_dc_term_only() -> None:
    """L = c: c_00 = c * integral Y_00 = c * 4 pi / sqrt(4 pi) = c sqrt(4 pi); everything else 0."""
    c = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64)
    coeffs = project_sh(c.expand(12, 24, 3).contiguous(), order=4)
    assert torch.allclose(coeffs[0], c * math.sqrt(4 * math.pi), rtol=1e-12)
    assert coeffs[1:].abs().max() < 1e-12


def test_projection_recovers_band_limited_maps() -> None:
    generator = torch.Generator().manual_seed(3)
    coeffs = torch.randn(16, 3, generator=generator, dtype=torch.float64)
    envmap = eval_sh(coeffs, envmap_directions(64, 128, dtype=torch.float64))
    recovered = project_sh(envmap, order=3)
    assert torch.allclose(recovered, coeffs, atol=3e-3)
    # Projection to a lower order keeps exactly the lower bands.
    assert torch.allclose(project_sh(envmap, order=1), recovered[:4], atol=1e-12)


def test_cosine_lobe_factors_match_quadrature() -> None:
    """A_l = 2 pi integral_0^1 t P_l(t) dt (the clamped cosine's Legendre coefficients times 4 pi / (2l + 1))."""
    t, w = np.polynomial.legendre.leggauss(40)
    t, w = 0.5 * (t + 1.0), 0.5 * w  # nodes on [0, 1]
    factors = cosine_lobe_band_factors(8)
    for degree in range(9):
        legendre = np.polynomial.legendre.Legendre.basis(degree)(t)
        assert factors[degree] == pytest.approx(2 * math.pi * np.sum(w * t * legendre), abs=1e-12)
    assert factors[:5] == pytest.approx([math.pi, 2 * math.pi / 3, math.pi / 4, 0.0, -math.pi / 24])


def test_irradiance_of_uniform_light_is_pi_l() -> None:
    radiance = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64)
    coeffs = project_sh(radiance.expand(16, 32, 3).contiguous(), order=2)
    irradiance = sh_irradiance(coeffs, _unit(100))
    assert torch.allclose(irradiance, math.pi * radiance.expand(100, 3), rtol=1e-10)


def _brute_force_irradiance(envmap: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    height, width, _ = envmap.shape
    directions = envmap_directions(height, width, dtype=envmap.dtype).reshape(-1, 3)
    weights = envmap_solid_angles(height, width, dtype=envmap.dtype).reshape(-1, 1)
    cosine = (normals @ directions.T).clamp_min(0.0)
    return cosine @ (envmap.reshape(-1, 3) * weights)


def test_irradiance_of_an_upper_hemisphere_cosine_sky() -> None:
    """L(w) = max(0, z): E(+z) = 2 pi / 3 exactly, E(-z) = 0, and everywhere against dense quadrature."""
    envmap = envmap_directions(128, 256, dtype=torch.float64)[..., 2:].clamp_min(0.0).expand(-1, -1, 3)
    normals = torch.cat([torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]), _unit(60, seed=1)])
    reference = _brute_force_irradiance(envmap, normals)
    assert float(reference[0, 0]) == pytest.approx(2 * math.pi / 3, rel=1e-4)
    assert float(reference[1, 0]) == 0.0
    # Order 2: the neglected l = 4 band is damped by A_4 = -pi/24; ~1% of the peak irradiance remains.
    order2 = sh_irradiance(project_sh(envmap, order=2), normals)
    error2 = (order2 - reference).abs().max() / reference.max()
    assert error2 < 0.02
    order6 = sh_irradiance(project_sh(envmap, order=6), normals)
    error6 = (order6 - reference).abs().max() / reference.max()
    assert error6 < 0.3 * error2  # higher orders converge
    assert float(order2[0, 0]) == pytest.approx(2 * math.pi / 3, rel=0.02)


def test_irradiance_gradients() -> None:
    envmap = torch.rand(4, 8, 3, dtype=torch.float64, requires_grad=True)
    normals = _unit(4, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e, n: sh_irradiance(project_sh(e, 2), n), (envmap, normals))
