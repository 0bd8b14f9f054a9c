"""LPIPS: the computation (with random weights, built here in the tests only) and the refusal to run without weights.

The product code never builds a network with random weights; these tests do, to check the arithmetic and the loading
path. A check of our network against torchmetrics' implementation (same random backbone, torchmetrics' shipped linear
heads) runs where torchmetrics is installed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from relight3d.errors import WeightsError
from relight3d.eval.evaluate import evaluate_folders
from relight3d.eval.image_metrics import align_channels
from relight3d.eval.lpips import (
    BACKBONES,
    LPIPS,
    NOT_AVAILABLE,
    LPIPSWeightsNotFound,
    find_lpips_weights,
    load_lpips,
)
from relight3d.eval.metrics import lpips_model, score_image


@pytest.fixture(scope="module")
def random_alex() -> LPIPS:
    """LPIPS-alex with random backbone and random positive heads (tests only)."""
    torch.manual_seed(0)
    net = LPIPS("alex")
    for head in net.heads:
        head.weight.data = torch.rand_like(head.weight) * 0.1
    return net


def _save_random_weights(folder: Path, net: LPIPS) -> None:
    """Write ``net``'s weights where ``find_lpips_weights`` looks, in torchvision's and lpips' formats."""
    folder.mkdir(parents=True, exist_ok=True)
    backbone = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(2, 2)  # torchvision's file has the classifier too; it is ignored
    torch.save(backbone, folder / "alexnet-owt-7be5be79.pth")
    heads = {f"lin{k}.model.1.weight": h.weight.detach().clone() for k, h in enumerate(net.heads)}
    torch.save(heads, folder / "alex.pth")


def test_lpips_of_identical_images_is_zero_and_the_distance_is_symmetric(random_alex):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 40, 44, generator=g)
    y = torch.rand(2, 3, 40, 44, generator=g)
    distance, spatial = random_alex.distance_map(x, x)
    assert torch.equal(distance, torch.zeros(2)) and torch.equal(spatial, torch.zeros(2, 40, 44))
    d_xy, d_yx = random_alex(x, y), random_alex(y, x)
    assert torch.allclose(d_xy, d_yx, rtol=1e-5, atol=0)
    assert (d_xy > 0).all()
    # Closer images are closer.
    assert (random_alex(x, (x + 0.02 * (y - x))) < d_xy).all()


def test_lpips_matches_torchmetrics_with_the_same_weights():
    tm_lpips = pytest.importorskip("torchmetrics.functional.image.lpips")
    torch.manual_seed(2)
    reference = tm_lpips._LPIPS(pretrained=True, net="alex", pnet_rand=True, spatial=False).eval()
    ours = LPIPS("alex")
    backbone = {}
    for name in ("slice1", "slice2", "slice3", "slice4", "slice5"):
        backbone.update({f"features.{k}": v for k, v in getattr(reference.net, name).state_dict().items()})
    ours.load_backbone(backbone, Path("reference"))
    heads_file = Path(tm_lpips.__file__).parent / "lpips_models" / "alex.pth"
    ours.load_heads(torch.load(heads_file, map_location="cpu", weights_only=True), heads_file)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 48, 40, generator=g)
    y = (x + 0.2 * torch.randn(2, 3, 48, 40, generator=g)).clamp(0, 1)
    expected = reference(2 * x - 1, 2 * y - 1).flatten()
    got, spatial = ours.distance_map(x, y)
    assert torch.allclose(got, expected, rtol=1e-4), (got, expected)
    reference.spatial = True
    expected_map = reference(2 * x - 1, 2 * y - 1)[:, 0]
    assert torch.allclose(spatial, expected_map, rtol=1e-4, atol=1e-7)


def test_weights_are_loaded_from_the_env_folder_and_reproduce_the_network(tmp_path, monkeypatch, random_alex):
    folder = tmp_path / "lpips_weights"
    _save_random_weights(folder, random_alex)
    monkeypatch.setenv("RELIGHT3D_LPIPS_WEIGHTS", str(folder))
    found = find_lpips_weights("alex")
    assert found.backbone == folder / "alexnet-owt-7be5be79.pth" and found.heads == folder / "alex.pth"
    loaded = load_lpips("alex")
    x, y = torch.rand(1, 3, 36, 36), torch.rand(1, 3, 36, 36)
    assert torch.equal(loaded(x, y), random_alex(x, y))
    model, status = lpips_model("alex")
    assert model is not None and status.startswith("LPIPS-alex: ") and str(folder) in status


def test_masked_lpips_averages_the_spatial_map_inside_the_mask(random_alex):
    g = torch.Generator().manual_seed(5)
    pred, gt = torch.rand(40, 40, 3, generator=g), torch.rand(40, 40, 3, generator=g)
    mask = torch.zeros(40, 40, 1)
    mask[5:30, 10:35] = 1
    metrics, _ = score_image(pred, gt, mask, random_alex)
    distance, spatial = random_alex.distance_map(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None])
    assert metrics["lpips"] == pytest.approx(float(distance[0]), rel=1e-5)
    assert metrics["lpips_masked"] == pytest.approx(float(spatial[0, 5:30, 10:35].mean()), rel=1e-5)
    # The aligned figures are LPIPS of the channel-aligned prediction, the same two numbers on another image.
    aligned, _ = align_channels(pred, gt, mask)
    distance, spatial = random_alex.distance_map(aligned.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None])
    assert metrics["lpips_aligned"] == pytest.approx(float(distance[0]), rel=1e-5)
    assert metrics["lpips_masked_aligned"] == pytest.approx(float(spatial[0, 5:30, 10:35].mean()), rel=1e-5)
    assert metrics["lpips_aligned"] != pytest.approx(metrics["lpips"], rel=1e-3)  # alignment changed the image


def test_without_weights_lpips_is_refused_and_reported_not_available(no_lpips_weights, bench):
    with pytest.raises(LPIPSWeightsNotFound, match=r"n/a \(no LPIPS weights\)"):
        find_lpips_weights("alex")
    with pytest.raises(LPIPSWeightsNotFound):
        load_lpips("alex")
    model, status = lpips_model("alex")
    assert model is None and status.startswith(NOT_AVAILABLE)
    result = evaluate_folders(bench["exact"], bench["gt_light001"])
    assert result.lpips_status.startswith(NOT_AVAILABLE)
    assert all(math.isnan(r.metrics["lpips"]) and math.isnan(r.metrics["lpips_masked"]) for r in result.records)
    assert result.mean()["psnr_masked"] == 120.0  # the other metrics are still computed


def test_a_wrong_weight_file_is_a_one_line_weights_error(tmp_path, monkeypatch, random_alex):
    folder = tmp_path / "bad"
    _save_random_weights(folder, random_alex)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)}, folder / "alex.pth")
    monkeypatch.setenv("RELIGHT3D_LPIPS_WEIGHTS", str(folder))
    with pytest.raises(WeightsError, match="not LPIPS-alex linear heads") as info:
        load_lpips("alex")
    assert "\n" not in str(info.value)
    (folder / "alex.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"alex\.pth: cannot be read as a state dict") as info:
        load_lpips("alex")
    assert info.value.__cause__ is not None  # the loader's own error is kept


def test_images_below_the_backbone_minimum_are_refused(random_alex):
    size = BACKBONES["alex"].min_size - 1
    with pytest.raises(ValueError, match="at least 31 px"):
        random_alex(torch.rand(1, 3, size, 64), torch.rand(1, 3, size, 64))
    random_alex(torch.rand(1, 3, size + 1, size + 1), torch.rand(1, 3, size + 1, size + 1))  # the minimum works
