"""Weight-free check at a tiny size: reconstruction-only relight3d-sds reproduces a real photo's input view."""

from __future__ import annotations

import numpy as np

from relight3d.engine.run import build_pipeline
from relight3d.method_configs import sds_config
from relight3d.pipelines.sds_checks import check_reconstruction, coffee_cup_rgba, reconstruction_config


def test_coffee_cup_mask():
    rgba = coffee_cup_rgba(64)
    assert rgba.shape == (64, 64, 4) and rgba.dtype == np.uint8
    alpha = rgba[..., 3] > 127
    assert 0.45 < alpha.mean() < 0.9  # cup and saucer fill most of the square crop
    assert not alpha[:3, :3].any() and not alpha[:3, -3:].any()  # the top corners are table: cut out
    assert alpha[16:24, 28:36].all()  # the coffee in the cup is inside the object
    coffee = rgba[16:24, 28:36, :3].reshape(-1, 3).astype(float).mean(0)
    assert coffee[0] > coffee[2] + 40  # brown-orange crema, not the blue-grey spoon or white rim


def test_reconstruction_only_reproduces_the_photo(tmp_path):
    """Prior weight 0, 32 px, 60 iterations: well above an untrained field (the full-size script asks 25 dB)."""
    metrics = check_reconstruction(sds_config(), tmp_path, size=32, steps=60, rays_per_batch=512, tiny=True)
    untrained = build_pipeline(reconstruction_config(sds_config(), tiny=True), tmp_path / "coffee_cup_32.png")
    floor = untrained.evaluate_reference_view()
    assert floor["psnr"] < 15.0
    assert metrics["psnr"] > 19.0 and metrics["psnr_masked"] > 18.0, metrics
