"""relight3d-gaffer end to end on a tiny scene: stage 1 cache (against a closed form), image replacement, the
appearance fit, frozen density, stage 2, state kept out of checkpoints, resume."""

from __future__ import annotations

import dataclasses
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from relight3d.data import images as image_files
from relight3d.engine.run import train
from relight3d.engine.trainer import latest_checkpoint, load_checkpoint_file
from relight3d.errors import DataError
from relight3d.lighting import linear_to_srgb, srgb_to_linear
from relight3d.method_configs import gaffer_config, tensorf_config
from relight3d.pipelines.relight_field import load_field_run, render_view, straight_rgb
from relight3d.pipelines.relight_stage1 import STAGE1_DIRS, relight_training_views
from relight3d.pipelines.relight_state import RelightingState


@pytest.fixture(scope="module")
def target_map(tiny_object_folder: Path) -> Path:
    return tiny_object_folder / "envmaps" / "sky.exr"


def test_straight_rgb_undoes_the_render_compositing() -> None:
    g = torch.Generator().manual_seed(0)
    colour = torch.rand(64, 3, generator=g)
    acc = torch.cat([torch.zeros(4), torch.full((4,), 0.5 / 255), torch.rand(52, generator=g), torch.ones(4)])[:, None]
    background = torch.tensor([1.0, 0.5, 0.0])
    rendered = acc * colour + (1 - acc) * background
    out = straight_rgb(rendered, acc, background)
    seen = acc[:, 0] >= 1 / 255
    assert torch.allclose(out[seen], colour[seen], atol=1e-4)
    assert torch.equal(out[~seen], background.expand(int((~seen).sum()), 3))
    # composited once more with the accumulation as alpha, it gives the render back (the evaluation's view of a PNG)
    again = out * acc + (1 - acc) * background
    assert torch.allclose(again[seen], rendered[seen], atol=1e-4)
    assert torch.allclose(again, rendered, atol=1 / 255)


def test_gaffer_is_registered() -> None:
    eps = {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs")}
    cfg = eps["relight3d-gaffer"].load().config
    assert cfg.pipeline.stage1_steps == 2500 and cfg.max_num_iterations == 3000
    assert cfg.optimizers["appearance_grid"]["optimizer"].lr == 0.02
    assert cfg.optimizers["decoder"]["optimizer"].lr == 1e-3


def test_two_stages_end_to_end(
    trained_object_run: Path, target_map: Path, tmp_path: Path, shrink_config, monkeypatch
) -> None:
    trained_run = trained_object_run
    _, field_state, _ = load_field_run(trained_run)
    torch.manual_seed(0)
    cfg = shrink_config(gaffer_config(stage1_steps=30, stage2_steps=3), 33)
    cfg.pipeline.field_run = trained_run
    cfg.pipeline.target_envmap = target_map
    trainer = train(cfg, None, tmp_path, experiment_name="gaffer")
    pipeline = trainer.pipeline
    cache = trainer.base_dir / "stage1"
    n = len(pipeline.datamanager.train_cameras)
    for d in STAGE1_DIRS:
        assert len(list((cache / d).iterdir())) == n, d
    rt = np.load(cache / "target_RT" / "000.npy")
    c2w = pipeline.datamanager.train_cameras.camera_to_worlds[0].numpy()
    assert np.allclose(rt[:, :3] @ c2w[:, :3], np.eye(3), atol=1e-4)

    # the training images were replaced by the relit views (alpha kept)
    def load_png(path: Path) -> torch.Tensor:
        return torch.from_numpy(image_files.read_rgba(path)[0])

    pred0 = load_png(cache / "pred_image" / "000.png")[..., :3]
    stored = pipeline.datamanager.train_images[0, ..., :3].cpu()
    mask = pipeline.datamanager.train_images[0, ..., 3].cpu() > 0.5
    assert (pred0 - stored).abs()[mask].max() < 1.5 / 255
    original = load_png(cache / "input_image" / "000.png")[..., :3]
    assert (pred0 - original).abs()[mask].mean() > 0.02  # the bluish light changed the object
    # density is frozen: identical to the trained field; appearance moved
    state = pipeline.model.state_dict()
    density_keys = [k for k in state if k.startswith("field.density_")]
    assert density_keys and all(torch.equal(state[k], field_state[k]) for k in density_keys)
    assert not torch.equal(state["field.appearance_planes"], field_state["field.appearance_planes"])
    # the run-time state is plain data outside the module tree: the checkpoint holds the model and nothing else
    assert isinstance(pipeline.state, RelightingState) and pipeline.state.prior is not None
    assert set(pipeline.state_dict()) == {f"_model.{k}" for k in state}
    assert pipeline.state.timings.stage1_views == n and pipeline.state.timings.stage2_iters == 2
    # stage 1 fitted the appearance to the relit views: the training views now render much closer to them than
    # the trained field's did
    from relight3d.pipelines.relight_run import trained_field_weights

    relit = pipeline.datamanager.train_images.cpu()

    def error_to_relit() -> float:
        errors = []
        with torch.no_grad():
            for i in range(n):
                rgb = render_view(pipeline.model, pipeline.datamanager.train_cameras[i : i + 1])["rgb"].cpu()
                inside = relit[i, ..., 3] > 0.99
                errors.append(((rgb - relit[i, ..., :3]) ** 2)[inside].mean())
        return float(torch.stack(errors).mean())

    fitted = error_to_relit()
    with trained_field_weights(pipeline):
        unfitted = error_to_relit()
    assert fitted < 0.6 * unfitted, (fitted, unfitted)
    ckpt = latest_checkpoint(trainer.base_dir / "nerfstudio_models")
    assert ckpt is not None and load_checkpoint_file(ckpt)["step"] == 32
    # stage 2 ran at a tenth of the scheduled learning rates (the schedulers' base rates were scaled once)
    scheduler = trainer.optimizers.schedulers["appearance_grid"]
    assert scheduler.base_lrs[0] == pytest.approx(0.02 * pipeline.config.stage2.lr_scale)
    # cast shadows: per object pixel, the transmittance towards the 288 shadow directions. A surface point sees
    # about the hemisphere around its normal, so roughly half of the directions are blocked by the object itself;
    # background pixels read 1.
    vis = pipeline.training_view_visibility(torch.arange(n))
    fg = pipeline.training_view_gbuffers()["accumulation"][..., 0] > 0.5
    assert vis.shape == (n, *fg.shape[1:], 2 * 12**2)
    assert bool((vis[~fg] == 1).all()) and float(vis.min()) >= 0.0 and float(vis.max()) <= 1.0
    assert 0.3 < float(vis[fg].mean()) < 0.75
    # normals fused across views: unit vectors on the object, and closer to each view's own density + depth
    # normals than to their mirror image (they average the same surface, not something else)
    gb = pipeline.training_view_gbuffers()
    fused = gb["multiview_normals"][fg]
    assert torch.allclose(fused.norm(dim=-1), torch.ones(len(fused)), atol=1e-4)
    assert float((fused * torch.nn.functional.normalize(gb["normals"][fg], dim=-1)).sum(-1).mean()) > 0.5

    # eval renders are saved with straight alpha: composited on white by the evaluator, they are the render itself
    from relight3d.data.images import read_rgba
    from relight3d.eval.folders import composite
    from relight3d.pipelines.relight_run import render_eval_views

    eval_cams = pipeline.datamanager.eval_dataset.cameras
    views = list(pipeline.datamanager.eval_dataset.metadata.get("view_indices") or range(len(eval_cams)))
    render_eval_views(pipeline, tmp_path / "pred", {v: f"{v:03d}.png" for v in views})
    with torch.no_grad():
        render = render_view(pipeline.model, eval_cams[0:1])
    saved = composite(read_rgba(tmp_path / "pred" / f"{views[0]:03d}.png")[0], 1.0)
    edge = (render["accumulation"][..., 0] > 0.05) & (render["accumulation"][..., 0] < 0.95)
    assert int(edge.sum()) > 0  # the check covers partly covered pixels, where compositing twice would show
    assert float((saved - render["rgb"].cpu()).abs().max()) < 1.5 / 255

    # stage 2 hands the prior the object's own colour (not the render on white) and composites its answer back:
    # with a prior that returns its input, the target is the render and the loss vanishes
    seen = {}

    def identity_refine(views, t_star):  # noqa: ANN001, ANN202
        seen["images"], seen["masks"] = views.images.clone(), views.masks.clone()
        return views.images

    pipeline.prior.refine = identity_refine
    outputs, losses, _ = pipeline.stage2_loss_dict(0)
    acc = seen["masks"][0]
    recomposited = seen["images"][0] * acc + (1 - acc) * pipeline.model.background.cpu()
    # (to within the 1/255 of accumulation below which the colour is taken to be the background's)
    assert torch.allclose(recomposited, outputs["rgb"].detach().cpu(), atol=1.01 / 255)
    assert float(losses["stage2_l1"]) < 1e-3

    # the public stage-2 preset through the pipeline: its t* reaches the prior, its weights and LPIPS-VGG (on [0, 1]
    # images as they are) make the losses; the LPIPS weights are random ones written where relight3d looks
    from relight3d.eval.lpips import LPIPS
    from relight3d.pipelines.relight_stage2 import STAGE2_PRESETS, image_total_variation, t_star_at

    net = LPIPS("vgg")
    torch.save({f"features.{k}": v for k, v in net.features.state_dict().items()}, tmp_path / "vgg16-397923af.pth")
    torch.save({f"lin{k}.model.1.weight": h.weight.detach() for k, h in enumerate(net.heads)}, tmp_path / "vgg.pth")
    monkeypatch.setenv("RELIGHT3D_LPIPS_WEIGHTS", str(tmp_path))
    pipeline.config.stage2 = STAGE2_PRESETS["neural-gaffer-public"]()
    asked = []
    pipeline.prior.refine = lambda views, t_star: asked.append(t_star) or torch.full_like(views.images, 0.5)
    outputs, losses, metrics = pipeline.stage2_loss_dict(2)
    assert asked == [t_star_at(2, 3, 0.4, 0.05, "exponential-tail")]
    assert float(metrics["t_star"]) == pytest.approx(asked[0])
    rgb, acc = outputs["rgb"], outputs["accumulation"].clamp(0, 1)
    refined = (0.5 * acc + (1 - acc) * pipeline.model.background).detach()
    lpips = net(*((x.permute(2, 0, 1)[None] + 1) / 2 for x in (rgb, refined)))
    expected = {
        "stage2_l1": 0.5 * (rgb - refined).abs().mean(),
        "stage2_tv": 1.0 * image_total_variation(rgb, "squared-mean"),
        "stage2_lpips": 0.5 * lpips.mean(),
    }
    assert set(losses) == set(expected)
    assert all(torch.allclose(losses[k], v, rtol=1e-4) for k, v in expected.items()), (losses, expected)
    del pipeline.prior.refine
    pipeline.config.stage2 = STAGE2_PRESETS["relight3d"]()

    # stage 1 against a closed form: under uniform maps with the target half the source, a Lambertian prior scales
    # every object pixel's linear colour by 0.5 (the shading, the shadows and the bounce all scale with the light).
    # Batches of 5 views: the last one is partial.
    source = torch.full((8, 16, 3), 4.0)
    lambertian = dataclasses.replace(pipeline.config.prior, specular_weight=0.0).setup()
    originals = torch.cat([pipeline.state.original_images, relit[..., 3:]], -1)
    c2w = pipeline.datamanager.train_cameras.camera_to_worlds.cpu()

    def inputs(views: torch.Tensor) -> dict:
        return {**pipeline.prior_inputs(views), "source_envmap": source}

    uniform = tmp_path / "uniform_stage1"
    out = relight_training_views(lambertian, originals, c2w, 0.5 * source, inputs, 5, uniform, "k")
    inside = originals[..., 3:] > 0
    expected = torch.where(inside, linear_to_srgb(0.5 * srgb_to_linear(originals[..., :3])), originals[..., :3])
    assert out.shape == expected.shape and float((out - expected).abs().max()) < 1e-4
    assert float((out - originals[..., :3]).abs()[inside[..., 0]].mean()) > 0.05
    cached = torch.stack([load_png(uniform / "pred_image" / f"{i:03d}.png") for i in range(n)])
    assert float((cached[..., :3] - expected).abs().max()) < 0.51 / 255  # 8-bit PNGs
    assert torch.equal(cached[..., 3:], originals[..., 3:])

    # resume: the stage-1 cache is reused (no new files), training continues from the checkpoint
    stamp = (cache / "pred_image" / "000.png").stat().st_mtime_ns
    cfg2 = shrink_config(gaffer_config(stage1_steps=30, stage2_steps=3), 2)
    cfg2.pipeline.field_run = trained_run
    cfg2.pipeline.target_envmap = target_map
    cfg2.pipeline.cache_dir = cache
    cfg2.load_dir = trainer.base_dir / "nerfstudio_models"
    trainer2 = train(cfg2, None, tmp_path / "resumed", experiment_name="gaffer")
    assert (cache / "pred_image" / "000.png").stat().st_mtime_ns == stamp
    assert trainer2._start_step == 33
    # the restored stage-2 learning rates were not scaled a second time
    assert trainer2.optimizers.schedulers["appearance_grid"].base_lrs[0] == pytest.approx(0.02 * 0.1)


def test_field_run_from_another_method_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = tensorf_config(10)
    cfg.method_name = "nerfacto"
    (tmp_path / "config.yml").write_text(yaml.dump(cfg))
    with pytest.raises(DataError, match="nerfacto"):
        load_field_run(tmp_path / "config.yml")
    with pytest.raises(DataError, match="not found"):
        load_field_run(tmp_path / "missing" / "config.yml")
