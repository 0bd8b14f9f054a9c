"""Image metrics against hand-computed values: PSNR (masked/full), channel alignment, SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relight3d.eval.image_metrics import align_channels, channel_scale, psnr, ssim, ssim_map
from relight3d.eval.metrics import METRICS, score_image

C1, C2 = 0.01**2, 0.03**2


def test_raw_psnr_is_hand_computed_and_alignment_undoes_a_channel_scale():
    gt = torch.full((6, 5, 3), 0.4)
    pred = gt * torch.tensor([2.0, 0.5, 1.0])
    # Errors per channel: 0.4, -0.2, 0 -> MSE = (0.16 + 0.04 + 0) / 3.
    expected = -10.0 * math.log10((0.16 + 0.04) / 3.0)
    assert float(psnr(pred, gt)) == pytest.approx(expected, abs=1e-4)  # 11.7609 dB
    metrics, scale = score_image(pred, gt, torch.ones(6, 5, 1))
    assert metrics["psnr"] == pytest.approx(expected, abs=1e-4)
    assert metrics["psnr_masked"] == pytest.approx(expected, abs=1e-4)
    assert scale == (0.5, 2.0, 1.0)
    assert metrics["psnr_aligned"] == 120.0  # MSE 0, floored at 1e-12
    assert metrics["ssim_aligned"] == pytest.approx(1.0, abs=1e-6)


def test_alignment_on_a_varying_image_with_a_mask_leaves_the_background():
    g = torch.Generator().manual_seed(1)
    gt = 0.05 + 0.4 * torch.rand(16, 16, 3, generator=g)
    mask = torch.zeros(16, 16, 1)
    mask[4:12, 3:13] = 1.0
    gt = torch.where(mask > 0, gt, torch.ones_like(gt))  # object on white
    pred = torch.where(mask > 0, gt * torch.tensor([2.0, 0.5, 1.0]), gt)
    aligned, scale = align_channels(pred, gt, mask)
    assert scale.tolist() == [0.5, 2.0, 1.0]
    assert torch.equal(aligned, gt)  # x * 2 * 0.5 and x * 0.5 * 2 are exact in floating point
    assert torch.equal(aligned[mask[..., 0] == 0], pred[mask[..., 0] == 0])  # the white background is not tinted
    metrics, _ = score_image(pred, gt, mask)
    assert metrics["psnr_masked_aligned"] == 120.0 and metrics["psnr_aligned"] == 120.0
    # Raw masked PSNR from the definition: mean over mask pixels of (R^2 + (G/2)^2 + 0) / 3.
    inside = gt[mask[..., 0] > 0].double()
    mse = ((inside[:, 0] ** 2 + (inside[:, 1] / 2) ** 2) / 3).mean()
    assert metrics["psnr_masked"] == pytest.approx(-10 * math.log10(float(mse)), abs=1e-3)


def test_masked_psnr_counts_only_mask_pixels():
    g = torch.Generator().manual_seed(2)
    gt = 0.1 + 0.5 * torch.rand(10, 10, 3, generator=g)
    mask = torch.zeros(10, 10, 1)
    mask[2:7, 2:8] = 1.0  # 30 of 100 pixels
    pred = gt + torch.where(mask > 0, torch.tensor(0.1), torch.tensor(0.3))  # no clipping: gt + 0.3 <= 0.9
    assert float(psnr(pred, gt, mask)) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 inside
    full_mse = (30 * 0.01 + 70 * 0.09) / 100
    assert float(psnr(pred, gt)) == pytest.approx(-10 * math.log10(full_mse), abs=1e-4)
    # Changing pixels outside the mask does not change the masked figure.
    other = torch.where(mask > 0, pred, torch.zeros_like(pred))
    assert float(psnr(other, gt, mask)) == pytest.approx(20.0, abs=1e-4)


def test_channel_scale_guards_zero_division_and_takes_the_usual_median():
    gt = torch.full((2, 2, 3), 0.5)
    pred = torch.zeros(2, 2, 3)
    pred[..., 0] = torch.tensor([[0.0, 0.25], [0.0, 0.25]])  # two zero pixels are left out: ratio 2 from the rest
    pred[..., 1] = torch.tensor([[0.5, 0.25], [0.5 / 3, 0.125]])  # ratios 1, 2, 3, 4 -> median 2.5
    # blue is 0 everywhere: no usable pixel, factor 1
    scale = channel_scale(pred, gt)
    assert scale.tolist() == pytest.approx([2.0, 2.5, 1.0])
    aligned, _ = align_channels(pred, gt)
    expected = (pred * torch.tensor([2.0, 2.5, 1.0])).clamp(0.0, 1.0)  # G: 0.5 * 2.5 clipped to 1
    assert torch.allclose(aligned, expected, atol=1e-7) and float(aligned[0, 0, 1]) == 1.0


def test_ssim_of_identical_images_is_one_and_of_constants_is_the_closed_form():
    img = torch.rand(20, 24, 3)
    assert float(ssim(img, img)) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(img, img, torch.ones(20, 24, 1))) == pytest.approx(1.0, abs=1e-6)
    # Two constant images a, b: every variance is 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) at every pixel.
    a, b = 0.2, 0.7
    value = float(ssim(torch.full((16, 16, 3), a), torch.full((16, 16, 3), b)))
    assert value == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), rel=1e-5)  # 0.5285


def test_ssim_map_matches_scikit_image_away_from_the_border():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(32, 36, 3, generator=g)
    y = (x + 0.15 * torch.randn(32, 36, 3, generator=g)).clamp(0, 1)
    _, reference = skimage_metrics.structural_similarity(
        x.numpy(),
        y.numpy(),
        channel_axis=2,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    ours = ssim_map(x, y).numpy()
    # Borders differ only by the padding convention (5 px = the window's radius).
    np.testing.assert_allclose(ours[5:-5, 5:-5], reference.mean(-1)[5:-5, 5:-5], atol=1e-5)


def test_masked_ssim_averages_the_map_inside_the_mask():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(16, 16, 3, generator=g)
    y = torch.rand(16, 16, 3, generator=g)
    mask = torch.zeros(16, 16, 1)
    mask[3:9, 5:14] = 1
    metrics, _ = score_image(x, y, mask)
    assert metrics["ssim_masked"] == pytest.approx(float(ssim_map(x, y)[3:9, 5:14].mean()), abs=1e-6)
    assert metrics["ssim"] == pytest.approx(float(ssim_map(x, y).mean()), abs=1e-6)


def test_score_image_without_lpips_or_mask_reports_nan_not_numbers():
    img = torch.rand(8, 8, 3)
    metrics, _ = score_image(img, img, torch.zeros(8, 8, 1))
    assert list(metrics) == list(METRICS)
    assert all(math.isnan(metrics[k]) for k in METRICS if k.startswith("lpips"))
    assert all(math.isnan(metrics[k]) for k in METRICS if "_masked" in k)
    assert metrics["psnr"] == 120.0 and metrics["ssim"] == pytest.approx(1.0, abs=1e-6)
