"""Stage 2's presets against Neural Gaffer's public 3D relighting script and against closed forms.

The public script (``neural_gaffer_3d_relighting/train_relighitng_3d.py``) is re-stated here in its own terms (NCHW
tensors, ``strength``, kiui's LPIPS called on [0, 1] images) and compared with relight3d's stage 2 under the
``neural-gaffer-public`` preset; the default preset is compared with its closed forms. kiui's LPIPS is the lpips
package's network without input rescaling: torchmetrics' ``_LPIPS`` with ``normalize=False`` is the same network,
and it ships the VGG linear heads, so only the VGG backbone is random here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from relight3d.pipelines.relight_stage2 import (
    DEFAULT_STAGE2,
    LR_FACTOR_KEY,
    PUBLIC_LR_DECAY,
    STAGE2_PRESETS,
    Stage2Config,
    image_total_variation,
    stage2_losses,
    stage2_lr_scaling,
    t_star_at,
)

PUBLIC = "neural-gaffer-public"


def public_strength(iteration: int, refinement_iteration: int = 500) -> float:
    """The public script's SDEdit strength at a stage-2 iteration (its "exponential" line, verbatim in numpy)."""
    return 0.6 + (np.exp(iteration) - 1) / (np.exp(refinement_iteration) - 1) * 0.35


# --- the t* schedules ---------------------------------------------------------------------------------------------
def test_public_preset_holds_t_star_at_its_start_as_the_public_code_does() -> None:
    from diffusers import DDIMScheduler

    from relight3d.priors.diffusion.sampling import img2img_timesteps

    p = STAGE2_PRESETS[PUBLIC]()
    t = [t_star_at(k, 500, p.t_star_start, p.t_star_end, p.t_star_schedule) for k in range(500)]
    assert t[:464] == [0.4] * 464  # constant at its start, exactly, for all but the last 36 of 500 iterations
    assert t[-3:] == pytest.approx([0.4 - 0.35 * np.exp(-3), 0.4 - 0.35 * np.exp(-2), 0.4 - 0.35 * np.exp(-1)])
    assert t == pytest.approx([1 - public_strength(k) for k in range(500)], abs=1e-15)
    # Snapped to the prior's 50 DDIM steps, the prior re-runs the very timesteps the public code does
    # (scheduler.timesteps[int(50 * strength):]): 20 steps from t = 381, then 18 and 14 at the last two iterations.
    scheduler = DDIMScheduler(num_train_timesteps=1000, steps_offset=1)
    scheduler.set_timesteps(50)
    kept = []
    for k in range(500):
        ours = img2img_timesteps(scheduler, 50, t_star_at(k, 500, 0.4, 0.05, p.t_star_schedule, num_steps=50))
        assert torch.equal(ours, scheduler.timesteps[int(50 * public_strength(k)) :]), k
        kept.append(len(ours))
    assert kept == [20] * 498 + [18, 14] and int(scheduler.timesteps[30]) == 381


def test_default_preset_anneals_t_star_exponentially() -> None:
    p = STAGE2_PRESETS[DEFAULT_STAGE2]()
    assert (p.t_star_start, p.t_star_end, p.t_star_schedule) == (0.4, 0.05, "exponential")
    t = [t_star_at(k, 500, p.t_star_start, p.t_star_end, p.t_star_schedule, num_steps=50) for k in range(500)]
    assert t == pytest.approx([0.4 * (0.05 / 0.4) ** (k / 499) for k in range(500)], rel=1e-12)
    assert t[0] == pytest.approx(0.4) and t[-1] == pytest.approx(0.05)
    assert t_star_at(50, 100, 0.4, 0.05, "constant") == 0.4
    assert t_star_at(99, 100, 0.4, 0.05, "linear") == pytest.approx(0.05)


# --- the losses ----------------------------------------------------------------------------------------------------
def test_total_variation_forms_equal_their_formulas_on_a_small_image() -> None:
    image = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 0.0], [1.0, 4.0, 4.0]])[..., None]
    # vertical differences 2 1 -3 / -1 2 4, horizontal 1 2 / 0 -2 / 3 0
    assert float(image_total_variation(image, "abs-sum")) == pytest.approx(13 / 6 + 8 / 6)
    assert float(image_total_variation(image, "squared-mean")) == pytest.approx((35 / 6 + 18 / 6) / 2)
    # the public script's lines, on NCHW
    x = torch.rand(20, 24, 3, generator=torch.Generator().manual_seed(0))
    rgb_pred = x.permute(2, 0, 1)[None]
    w_variance = torch.mean(torch.pow(rgb_pred[:, :, :, :-1] - rgb_pred[:, :, :, 1:], 2))
    h_variance = torch.mean(torch.pow(rgb_pred[:, :, :-1, :] - rgb_pred[:, :, 1:, :], 2))
    assert torch.allclose(image_total_variation(x, "squared-mean"), 1.0 * (h_variance + w_variance) / 2.0)


@pytest.fixture(scope="module")
def vgg_pair():
    """(torchmetrics' LPIPS-VGG, relight3d's LPIPS-VGG) with the same weights: a random backbone, the real heads."""
    tm_lpips = pytest.importorskip("torchmetrics.functional.image.lpips")
    from relight3d.eval.lpips import LPIPS

    torch.manual_seed(4)
    reference = tm_lpips._LPIPS(pretrained=True, net="vgg", pnet_rand=True).eval()
    ours = LPIPS("vgg")
    # torchmetrics keeps VGG's features in slices under their indices in torchvision's ``features`` ("slice2.5.weight")
    backbone = {f"features.{k.split('.', 1)[1]}": v for k, v in reference.net.state_dict().items()}
    ours.load_backbone(backbone, Path("reference"))
    heads = Path(tm_lpips.__file__).parent / "lpips_models" / "vgg.pth"
    ours.load_heads(torch.load(heads, map_location="cpu", weights_only=True), heads)
    return reference, ours


def test_public_preset_loss_equals_the_public_scripts(vgg_pair) -> None:
    reference, ours = vgg_pair
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(32, 32, 3, generator=g).requires_grad_()
    refined = (pred.detach() + 0.2 * torch.randn(32, 32, 3, generator=g)).clamp(0, 1)
    losses = stage2_losses(pred, refined, STAGE2_PRESETS[PUBLIC](), lambda: ours)

    rgb_pred, refined_images = pred.permute(2, 0, 1)[None], refined.permute(2, 0, 1)[None]
    w_variance = torch.mean(torch.pow(rgb_pred[:, :, :, :-1] - rgb_pred[:, :, :, 1:], 2))
    h_variance = torch.mean(torch.pow(rgb_pred[:, :, :-1, :] - rgb_pred[:, :, 1:, :], 2))
    img_tv_loss = 1.0 * (h_variance + w_variance) / 2.0
    lpips_loss = reference(refined_images, rgb_pred).mean()  # kiui's LPIPS: [0, 1] images, not rescaled
    refinement_l1_loss = F.l1_loss(refined_images, rgb_pred)
    assert set(losses) == {"stage2_l1", "stage2_tv", "stage2_lpips"}
    assert torch.allclose(losses["stage2_l1"], 0.5 * refinement_l1_loss)
    assert torch.allclose(losses["stage2_tv"], img_tv_loss)
    assert torch.allclose(losses["stage2_lpips"], 0.5 * lpips_loss, rtol=1e-4)
    total = img_tv_loss + 0.5 * lpips_loss + 0.5 * refinement_l1_loss
    assert torch.allclose(sum(losses.values()), total, rtol=1e-4)
    grad_ours = torch.autograd.grad(sum(losses.values()), pred, retain_graph=True)[0]
    grad_public = torch.autograd.grad(total, pred)[0]
    assert torch.allclose(grad_ours, grad_public, rtol=1e-3, atol=1e-7)


def test_default_preset_weights_and_lpips_input_range(vgg_pair) -> None:
    reference, ours = vgg_pair
    g = torch.Generator().manual_seed(2)
    pred, refined = torch.rand(32, 32, 3, generator=g), torch.rand(32, 32, 3, generator=g)

    def no_lpips():  # noqa: ANN202
        raise AssertionError("LPIPS was loaded although its weight is 0")

    default = STAGE2_PRESETS[DEFAULT_STAGE2]()
    losses = stage2_losses(pred, refined, default, no_lpips)
    assert set(losses) == {"stage2_l1", "stage2_tv"}
    assert float(losses["stage2_l1"]) == pytest.approx(1.0 * float((pred - refined).abs().mean()))
    abs_tv = (pred[1:] - pred[:-1]).abs().mean() + (pred[:, 1:] - pred[:, :-1]).abs().mean()
    assert float(losses["stage2_tv"]) == pytest.approx(0.01 * float(abs_tv))
    # with LPIPS on, the default maps [0, 1] to [-1, 1] (the range LPIPS was trained on)
    weighted = dataclasses.replace(default, lpips_weight=0.2, lpips_net="vgg")
    nchw = [x.permute(2, 0, 1)[None] for x in (pred, refined)]
    lpips = stage2_losses(pred, refined, weighted, lambda: ours)["stage2_lpips"]
    assert float(lpips) == pytest.approx(0.2 * float(reference(2 * nchw[0] - 1, 2 * nchw[1] - 1)), rel=1e-4)
    assert float(lpips) != pytest.approx(0.2 * float(reference(*nchw)), rel=1e-2)


# --- learning rates --------------------------------------------------------------------------------------------------
def _optimizers(lr: float = 0.02):  # noqa: ANN202
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([param], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    return SimpleNamespace(optimizers={"grid": optimizer}, schedulers={"grid": scheduler})


@pytest.mark.parametrize("name", [DEFAULT_STAGE2, PUBLIC])
def test_stage2_learning_rates_and_resume(name: str) -> None:
    """Stage-2 rates are the schedulers' times lr_scale * lr_decay ** k; a resumed run does not scale them again."""
    config = STAGE2_PRESETS[name]()
    assert (config.lr_scale, config.lr_decay) == ((0.1, 1.0) if name == DEFAULT_STAGE2 else (1.0, PUBLIC_LR_DECAY))
    opt = _optimizers()
    callback = stage2_lr_scaling(opt, 2, config)
    for step in range(6):
        callback(step)
        factor = 1.0 if step < 2 else config.lr_scale * config.lr_decay ** (step - 2)
        assert opt.optimizers["grid"].param_groups[0]["lr"] == pytest.approx(0.02 * 0.5**step * factor), step
        if step == 4:
            saved = (opt.optimizers["grid"].state_dict(), opt.schedulers["grid"].state_dict())
        opt.optimizers["grid"].step()
        opt.schedulers["grid"].step()
    resumed = _optimizers()
    resumed.optimizers["grid"].load_state_dict(saved[0])
    resumed.schedulers["grid"].load_state_dict(saved[1])
    stage2_lr_scaling(resumed, 2, config)(4)
    group = resumed.optimizers["grid"].param_groups[0]
    assert group["lr"] == pytest.approx(0.02 * 0.5**4 * config.lr_scale * config.lr_decay**2)
    assert group[LR_FACTOR_KEY] == pytest.approx(config.lr_scale * config.lr_decay**2)


# --- selecting a preset --------------------------------------------------------------------------------------------
def test_ns_train_selects_the_preset_and_keeps_field_overrides(capsys) -> None:
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    from relight3d.engine.safe_config import load_run_config_text

    def ns_train(*args: str):  # noqa: ANN202
        return tyro.cli(AnnotatedBaseConfigUnion, args=["relight3d-gaffer", *args])

    assert ns_train().pipeline.stage2 == Stage2Config()
    public = ns_train("pipeline.stage2:neural-gaffer-public").pipeline.stage2
    assert public == Stage2Config.public_preset() and public.tv_form == "squared-mean" and public.lpips_net == "vgg"
    both = ns_train("pipeline.prior:neural-gaffer", "pipeline.stage2:neural-gaffer-public",
                    "--pipeline.stage2.tv-weight", "0.5", "relight3d-objaverse", "--data", "obj")  # fmt: skip
    assert both.pipeline.stage2 == dataclasses.replace(Stage2Config.public_preset(), tv_weight=0.5)
    assert type(both.pipeline.prior).__name__ == "NeuralGafferPriorConfig"
    # the run's config.yml keeps the preset's values
    loaded = load_run_config_text(yaml.dump(both))
    assert loaded.pipeline.stage2 == both.pipeline.stage2
    with pytest.raises(SystemExit):
        ns_train("--help")
    text = capsys.readouterr().out
    assert all(f"pipeline.stage2:{name}" in text for name in STAGE2_PRESETS)


def test_relight_command_selects_the_preset(monkeypatch, tmp_path: Path, capsys) -> None:
    from relight3d.cli import main
    from relight3d.pipelines import relight_run

    jobs = []
    monkeypatch.setattr(relight_run, "run_relighting", lambda job: jobs.append(job) or {})
    argv = ["relight", "--field-run", "run.yml", "--envmap", "a.exr", "--output", str(tmp_path)]
    assert main(argv) == 0 and main([*argv, "--stage2-preset", PUBLIC]) == 0
    assert [job.method.pipeline.stage2 for job in jobs] == [Stage2Config(), Stage2Config.public_preset()]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--stage2-preset", "paper"])
    assert exit_.value.code == 2 and "invalid choice: 'paper'" in capsys.readouterr().err


def test_lpips_weight_without_lpips_weights_stops_before_training(
    trained_object_run: Path, tiny_object_folder: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The public preset weighs LPIPS-VGG; without its backbone on disk the run stops with one line naming it."""
    from relight3d.cli import main

    empty = tmp_path / "no_weights"
    empty.mkdir()
    monkeypatch.setenv("RELIGHT3D_LPIPS_WEIGHTS", str(empty))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(empty / "hub"))
    argv = ["relight", "--field-run", str(trained_object_run), "--envmap", str(tiny_object_folder / "envmaps" /
            "sky.exr"), "--output", str(tmp_path / "out"), "--stage1-steps", "2", "--stage2-steps", "2",
            "--video-frames", "0", "--stage2-preset", PUBLIC]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("relight3d: error: --pipeline.stage2.lpips-weight: is 0.5, but LPIPS-vgg has no weights")
    assert "backbone vgg16-397923af.pth" in err and str(empty) in err and "RELIGHT3D_LPIPS_WEIGHTS" in err
    assert not list(tmp_path.rglob("input_image"))  # stage 1 never started
