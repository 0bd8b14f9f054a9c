"""Neural Gaffer's LDR/HDR lighting encodings and the sRGB curves, against their formulas and numbers by hand."""

from __future__ import annotations

import math

import numpy as np
import torch

from relight3d.lighting import hdr_encoding, ldr_encoding, linear_to_srgb, srgb_to_linear
from relight3d.lighting.encodings import lighting_images_8bit, resize_8bit_bilinear

# Five radiances chosen so that 1 + 10 E is a power of sqrt(10): the HDR encoding log1p(10 E) / log1p(10 * 9.9) is
# then log(10^(k/2)) / log(100) = k / 4 exactly.
#   E                      LDR = min(E, 1) ** (1/2.2)                           x 255 -> uint8   HDR    x 255 -> uint8
#   0                      0                                                    0       0        0      0       0
#   (sqrt(10) - 1) / 10    exp(ln(0.2162278) / 2.2) = exp(-0.6960966) = 0.4985251  127.12  127   0.25   63.75   63
#   0.9                    exp(ln(0.9) / 2.2) = exp(-0.0478911) = 0.9532375        243.08  243   0.5    127.5   127
#   (10^1.5 - 1) / 10      1 (clipped)                                          255     255      0.75   191.25  191
#   9.9                    1 (clipped)                                          255     255      1      255     255
HAND_RADIANCE = (0.0, (math.sqrt(10) - 1) / 10, 0.9, (10**1.5 - 1) / 10, 9.9)
HAND_LDR = (0.0, 0.4985251, 0.9532375, 1.0, 1.0)
HAND_HDR = (0.0, 0.25, 0.5, 0.75, 1.0)
HAND_LDR_8BIT = (0, 127, 243, 255, 255)
HAND_HDR_8BIT = (0, 63, 127, 191, 255)


def _hand_map() -> torch.Tensor:
    """A 4 x 8 map whose texel (i, j), channel c holds HAND_RADIANCE[(i + j + c) % 5], and its table indices."""
    i, j, c = torch.meshgrid(torch.arange(4), torch.arange(8), torch.arange(3), indexing="ij")
    index = (i + j + c) % 5
    return torch.tensor(HAND_RADIANCE, dtype=torch.float32)[index], index


def test_encodings_of_a_4x8_map_equal_the_numbers_by_hand() -> None:
    envmap, index = _hand_map()
    expected_ldr = torch.tensor(HAND_LDR)[index]
    expected_hdr = torch.tensor(HAND_HDR)[index]
    torch.testing.assert_close(ldr_encoding(envmap), expected_ldr, atol=1e-6, rtol=0)
    torch.testing.assert_close(hdr_encoding(envmap), expected_hdr, atol=1e-6, rtol=0)
    ldr8, hdr8 = lighting_images_8bit(envmap)  # the public arithmetic (numpy float32, truncating uint8 casts)
    assert ldr8.dtype == hdr8.dtype == torch.uint8
    assert torch.equal(ldr8, torch.tensor(HAND_LDR_8BIT, dtype=torch.uint8)[index])
    assert torch.equal(hdr8, torch.tensor(HAND_HDR_8BIT, dtype=torch.uint8)[index])
    # relight3d's quantisation (floor of 255 x, in torch) gives the same levels on this map.
    assert torch.equal(torch.floor(hdr_encoding(envmap) * 255).to(torch.uint8), hdr8)
    assert torch.equal(torch.floor(ldr_encoding(envmap) * 255).to(torch.uint8), ldr8)
    # A black map: black images (the public code's 0 / 0 would give NaN).
    black = lighting_images_8bit(torch.zeros(4, 8, 3))
    assert all(torch.equal(x, torch.zeros(4, 8, 3, dtype=torch.uint8)) for x in black)


def test_8bit_bilinear_resize_by_hand() -> None:
    """PIL's bilinear filter, 8 -> 4 columns: a triangle of half-width 2 source pixels around each target centre
    (2x + 1), renormalised where it leaves the image, in 22-bit fixed point, rounded:

    * x = 0: columns 0, 1, 2 with weights 0.75, 0.75, 0.25 -> 3/7, 3/7, 1/7;
    * x = 1: columns 1..4 with 1/8, 3/8, 3/8, 1/8; x = 2: columns 3..6 likewise; x = 3: columns 5, 6, 7 with
      1/7, 3/7, 3/7.

    Row [0, 255, 0, 0, 255, 255, 0, 0]: 3/7 * 255 = 109.29 -> 109; (1/8 + 1/8) * 255 = 63.75 -> 64;
    (3/8 + 3/8) * 255 = 191.25 -> 191; 1/7 * 255 = 36.43 -> 36. The same weights act on rows.
    """
    row = torch.tensor([0, 255, 0, 0, 255, 255, 0, 0], dtype=torch.uint8)
    image = row[None, :, None].expand(2, 8, 3).contiguous()
    expected = torch.tensor([109, 64, 191, 36], dtype=torch.uint8)
    assert torch.equal(resize_8bit_bilinear(image, 2, 4), expected[None, :, None].expand(2, 4, 3))
    column = resize_8bit_bilinear(image.transpose(0, 1).contiguous(), 4, 2)
    assert torch.equal(column, expected[:, None, None].expand(4, 2, 3))
    assert torch.equal(resize_8bit_bilinear(image, 2, 8), image)  # same size: unchanged


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
