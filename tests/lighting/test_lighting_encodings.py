"""Neural Gaffer's LDR/HDR lighting encodings and the sRGB curves, against their formulas."""

from __future__ import annotations

import numpy as np
import torch

from relight3d.lighting import hdr_encoding, ldr_encoding, linear_to_srgb, srgb_to_linear


def _radiance(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    envmap = torch.rand(8, 16, 3, generator=generator) ** 4 * 50.0  # mostly dim, a few bright pixels
    envmap[0, 0] = 0.0
    return envmap


def test_ldr_encoding_is_clipped_gamma() -> None:
    envmap = _radiance()
    expected = np.clip(envmap.numpy(), 0.0, 1.0) ** (1.0 / 2.2)
    assert np.allclose(ldr_encoding(envmap).numpy(), expected, atol=1e-6)
    assert ldr_encoding(torch.tensor([-0.5, 0.0, 2.0])).tolist() == [0.0, 0.0, 1.0]


def test_hdr_encoding_is_log1p_over_max() -> None:
    envmap = _radiance()
    encoded = np.log1p(10.0 * envmap.numpy())
    expected = encoded / encoded.max()
    got = hdr_encoding(envmap)
    assert np.allclose(got.numpy(), expected, atol=1e-6)
    assert float(got.max()) == 1.0 and float(got.min()) == 0.0


def test_hdr_encoding_normalises_each_map_of_a_batch() -> None:
    a, b = _radiance(1), 0.01 * _radiance(2)
    batch = hdr_encoding(torch.stack([a, b]))
    assert torch.allclose(batch[0], hdr_encoding(a)) and torch.allclose(batch[1], hdr_encoding(b))
    assert torch.equal(hdr_encoding(torch.zeros(2, 4, 3)), torch.zeros(2, 4, 3))


def test_srgb_curves_against_the_standard() -> None:
    x = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    xs = x.numpy()
    expected = np.where(xs <= 0.0031308, 12.92 * xs, 1.055 * xs ** (1 / 2.4) - 0.055)
    assert np.allclose(linear_to_srgb(x).numpy(), expected, atol=1e-12)
    assert torch.allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)
    # Reference points: middle grey 0.18 -> 0.4613561..., sRGB 0.5 -> 0.2140411...
    assert abs(float(linear_to_srgb(torch.tensor(0.18, dtype=torch.float64))) - 0.46135612950044164) < 1e-12
    assert abs(float(srgb_to_linear(torch.tensor(0.5, dtype=torch.float64))) - 0.21404114048223255) < 1e-12
    # The two pieces meet: continuous at the threshold.
    low, high = linear_to_srgb(torch.tensor([0.0031308, 0.0031309], dtype=torch.float64)).tolist()
    assert abs(high - low) < 1e-5


def test_encodings_have_finite_gradients_at_zero() -> None:
    for fn in (ldr_encoding, linear_to_srgb, srgb_to_linear):
        x = torch.tensor([0.0, 1e-8, 0.3, 0.9], requires_grad=True)
        fn(x).sum().backward()
        assert torch.isfinite(x.grad).all(), fn.__name__
    envmap = _radiance().requires_grad_(True)
    hdr_encoding(envmap).sum().backward()
    assert torch.isfinite(envmap.grad).all()
