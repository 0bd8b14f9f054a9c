"""relight3d-sds: registration and --help, training with a tiny Stable Diffusion, model extensions, bad input."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
from contextlib import redirect_stdout
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from PIL import Image
from sds_helpers import tiny_sds_config, write_rgba

from relight3d.engine.run import build_pipeline, train
from relight3d.engine.trainer import latest_checkpoint
from relight3d.errors import ConfigError, DataError
from relight3d.fields.base import density_blob
from relight3d.geometry import pinhole_rays
from relight3d.pipelines.score_distillation import ScoreDistillationPipelineConfig
from relight3d.pipelines.sds_losses import AnnealedValue, alpha_entropy, gaussian_blur
from relight3d.pipelines.sds_views import PriorView, orbit_camera, sample_prior_view, view_direction
from relight3d.priors.stable_diffusion import StableDiffusionGuidanceConfig


def _entry(name: str):
    eps = {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs")}
    assert name in eps, sorted(eps)
    return eps[name].load().config


def _help_text(config) -> str:
    import tyro

    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        tyro.cli(type(config), default=config, args=["--help"])
    return out.getvalue()


def test_methods_registered_and_help_documents_every_knob():
    cfg = _entry("relight3d-sds")
    assert cfg.method_name == "relight3d-sds"
    assert isinstance(cfg.pipeline, ScoreDistillationPipelineConfig)
    assert _entry("relight3d-sds-tensorf").pipeline.model._target.__name__ == "SDSTensoRFModel"
    p = cfg.pipeline
    # RealFusion's published defaults.
    assert (p.image_loss_weight.start, p.mask_loss_weight.start, p.prior_loss_weight.start) == (5.0, 0.5, 1.0)
    assert (p.entropy_loss_weight.start, p.orientation_loss_weight.start) == (1e-4, 1e-2)
    assert p.normal_smoothness_loss_weight.start == 0.5
    assert (p.guidance.guidance_scale, p.guidance.min_step_fraction, p.guidance.max_step_fraction) == (100, 0.02, 0.98)
    assert p.guidance.weighting == "one_minus_alpha_bar" and p.guidance.pretrained_model_path is None
    # No mutable default is shared between instances (annealed weights are per-instance dataclasses).
    other = copy.deepcopy(cfg)
    other.pipeline.prior_loss_weight.start = 0.0
    assert ScoreDistillationPipelineConfig().prior_loss_weight.start == 1.0

    text = " ".join(_help_text(cfg).split())  # tyro wraps lines; compare whitespace-normalised
    for cls, prefix in [
        (ScoreDistillationPipelineConfig, "--pipeline."),
        (StableDiffusionGuidanceConfig, "--pipeline.guidance."),
        (AnnealedValue, "--pipeline.prior-loss-weight."),
        (type(p.model), "--pipeline.model."),
        (type(p.datamanager.dataparser), "--pipeline.datamanager.dataparser."),
    ]:
        for f in dataclasses.fields(cls):
            if f.name == "_target" or dataclasses.is_dataclass(getattr(cls(), f.name, None)):
                continue
            flag = prefix + f.name.replace("_", "-")
            assert flag in text, flag
    for doc in ["Weight of the SDS prior on random views", "Classifier-free guidance scale",
                "Pad a non-square image", "Peak of the density blob"]:  # fmt: skip
        assert doc in text, doc


def test_annealed_values_and_helpers():
    assert AnnealedValue(2.0).value(10_000) == 2.0
    lin = AnnealedValue(1.0, 3.0, end_iteration=100)
    assert lin.value(0) == 1.0 and lin.value(50) == pytest.approx(2.0) and lin.value(500) == 3.0
    log = AnnealedValue(1e-4, 1e-2, end_iteration=100, schedule="log")
    assert log.value(50) == pytest.approx(1e-3) and log.value(100) == pytest.approx(1e-2)
    assert not AnnealedValue(0.0).ever_positive() and AnnealedValue(0.0, 1.0).ever_positive()
    assert view_direction(10, 5, 60, 30) == "front" and view_direction(10, -170, 60, 30) == "back"
    assert view_direction(10, 90, 60, 30) == "side" and view_direction(75, 0, 60, 30) == "overhead"
    assert view_direction(-70, 0, 60, 30) == "bottom"
    # The Gaussian blur keeps constants, and blurs an impulse into the outer product of the normalised 1D kernel
    # with torchvision's default sigma for the size (0.3 ((k - 1) / 2 - 1) + 0.8 = 1.7 for k = 9).
    assert torch.allclose(gaussian_blur(torch.ones(1, 3, 12, 12), 9), torch.ones(1, 3, 12, 12))
    impulse = torch.zeros(1, 1, 15, 15)
    impulse[0, 0, 7, 7] = 1.0
    x = np.arange(-4, 5)
    k = np.exp(-(x**2) / (2 * 1.7**2))
    k /= k.sum()
    expected = np.zeros((15, 15))
    expected[3:12, 3:12] = np.outer(k, k)
    assert np.allclose(gaussian_blur(impulse, 9)[0, 0].numpy(), expected, atol=1e-6)
    # Alpha entropy in bits: 1 at half opacity, ~0 for empty or opaque rays.
    assert float(alpha_entropy(torch.full((4, 1), 0.5))) == pytest.approx(1.0)
    assert float(alpha_entropy(torch.tensor([[0.0], [1.0]]))) < 1e-3
    with pytest.raises(ConfigError, match="log schedule"):
        AnnealedValue(0.0, 1.0, schedule="log").value(5)


def test_prior_cameras_look_at_the_object_from_their_orbit():
    """Prior cameras sit at (radius, elevation, reference azimuth + relative azimuth) on the orbit (+Z up, azimuth 0
    at -Y) and look at the origin; the reference camera comes back jittered by the configured noise."""
    cfg = ScoreDistillationPipelineConfig(uniform_sphere_rate=0.0, reference_camera_noise=0.0)
    reference = PriorView(orbit_camera(1.8, 15.0, 30.0), 55.0, 15.0, 0.0, 1.8, None)
    np.random.seed(0)
    for _ in range(20):
        view = sample_prior_view(cfg, reference, 30.0, use_reference=False)
        el, az = math.radians(view.elevation), math.radians(30.0 + view.azimuth)
        expected = torch.tensor([math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)])
        assert torch.allclose(view.camera_to_world[:, 3], view.radius * expected, atol=1e-5)
        assert torch.allclose(view.camera_to_world[:, 2], expected, atol=1e-5)  # looks down -z at the origin
        assert cfg.fov_range[0] <= view.fov <= cfg.fov_range[1] and -180 <= view.azimuth <= 180
        assert view.direction == view_direction(view.elevation, view.azimuth, cfg.angle_front, cfg.angle_overhead)
    assert sample_prior_view(cfg, reference, 30.0, use_reference=True) is reference
    cfg.reference_camera_noise = 0.1
    jittered = [sample_prior_view(cfg, reference, 30.0, use_reference=True) for _ in range(200)]
    offsets = torch.stack([v.camera_to_world[:, 3] - reference.camera_to_world[:, 3] for v in jittered])
    assert 0.08 < float(offsets.std()) < 0.12 and all(v.direction is None for v in jittered)


def test_prior_views_render_the_rays_of_the_equivalent_nerfstudio_camera(tmp_path):
    """A square prior view is the model's render of the pixels of a nerfstudio pinhole camera with the same pose and
    field of view, in row-major order, with and without gradients (then in checkpointed chunks)."""
    from nerfstudio.cameras.cameras import Cameras

    pipeline = build_pipeline(tiny_sds_config(prior=False), write_rgba(tmp_path / "disc.png"))
    pipeline.eval()
    c2w = orbit_camera(1.5, 20.0, 35.0)
    focal = 4.0 / math.tan(math.radians(25.0))
    cams = Cameras(camera_to_worlds=c2w[None], fx=focal, fy=focal, cx=4.0, cy=4.0, width=8, height=8)
    bundle = cams.generate_rays(camera_indices=0)
    black = torch.zeros(3)
    with torch.no_grad():
        origins, directions = bundle.origins.reshape(-1, 3), bundle.directions.reshape(-1, 3)
        reference = pipeline.model.render_shaded(origins, directions, background=black, jitter=False)
        view = pipeline.render_view(c2w, 50.0, 8, background=black)
    assert float(reference["accumulation"].max()) > 0.1  # the density blob is in view
    assert torch.allclose(view["rgb"].reshape(-1, 3), reference["rgb"], atol=1e-5)
    assert torch.allclose(view["depth"].reshape(-1), reference["depth"].reshape(-1), atol=1e-5)
    pipeline.config.prior_rays_per_chunk = 16
    chunked = pipeline.render_view(c2w, 50.0, 8, background=black)
    assert chunked["rgb"].requires_grad and torch.allclose(chunked["rgb"].detach(), view["rgb"], atol=1e-5)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """relight3d-sds trained 20 iterations with the tiny Stable Diffusion; also the untrained reference metrics."""
    tmp = tmp_path_factory.mktemp("sds_run")
    image = write_rgba(tmp / "disc.png")
    cfg = tiny_sds_config(max_steps=20)
    # The tiny UNet is random, so its SDS pull is noise: weaken it so that 20 iterations show the fit.
    cfg.pipeline.guidance.guidance_scale = 7.5
    cfg.pipeline.prior_loss_weight.start = 0.1
    cfg.steps_per_save = 19
    torch.manual_seed(0)
    before = build_pipeline(copy.deepcopy(cfg), image).evaluate_reference_view()
    torch.manual_seed(0)
    trainer = train(cfg, image, tmp / "out", experiment_name="tiny")
    return cfg, trainer, before


def test_sds_trains_with_tiny_stable_diffusion(trained_run):
    """A few iterations with every loss on (SDS from the tiny SD): the reference-view loss falls."""
    cfg, trainer, before = trained_run
    pipeline = trainer.pipeline
    after = pipeline.evaluate_reference_view()
    ref_before = 5.0 * before["image_loss"] + 0.5 * before["mask_loss"]
    ref_after = 5.0 * after["image_loss"] + 0.5 * after["mask_loss"]
    assert ref_after < 0.6 * ref_before, (before, after)
    assert pipeline.guidance is not None
    # One iteration's loss terms: every configured term is present and finite.
    _, losses, metrics = pipeline.get_train_loss_dict(step=10)
    assert {"image_loss", "mask_loss", "sds_loss", "entropy_loss", "orientation_loss",
            "normal_smoothness_loss"} <= set(losses)  # fmt: skip
    assert all(torch.isfinite(v) for v in losses.values()) and float(metrics["sds_grad_norm"]) > 0
    # Checkpoints hold the radiance field only, never Stable Diffusion's weights.
    ckpt = latest_checkpoint(cfg.get_base_dir() / "nerfstudio_models")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert not any("unet" in k or "text_encoder" in k or "vae" in k for k in state["pipeline"])
    # Coarse to fine: after grid_levels_mask_iters every level is used.
    assert pipeline.model.field.level_mask is None


def test_export_mesh_and_video_of_the_trained_run(trained_run, tmp_path):
    """The Export issue's library functions work on a relight3d-sds run loaded from its config.yml."""
    export = pytest.importorskip("relight3d.export.mesh", reason="relight3d.export is not installed")
    from relight3d.engine.loading import load_trained_pipeline
    from relight3d.export.camera_paths import ViewSettings, orbit_path
    from relight3d.export.video import render_video

    cfg, trainer, _ = trained_run
    config, pipeline = load_trained_pipeline(cfg.get_base_dir() / "config.yml")
    assert pipeline.guidance is None  # loading a run for export never loads Stable Diffusion
    trained = trainer.pipeline.model.field.density(torch.zeros(1, 3))
    assert torch.allclose(pipeline.model.field.density(torch.zeros(1, 3)), trained)
    mesh = export.export_mesh(pipeline, tmp_path / "object.ply", resolution=32)
    assert len(mesh.faces) > 0 and (tmp_path / "object.ply").stat().st_size > 0
    extent = np.asarray(mesh.bounds)
    assert (extent[0] >= -0.76).all() and (extent[1] <= 0.76).all()  # inside the 0.75 scene box
    view = ViewSettings(radius=1.8, elevation=15.0, vertical_fov=55.0, width=16, height=16)
    summary = render_video(pipeline, orbit_path(4, view), tmp_path / "orbit.gif", progress=False)
    assert summary.n_frames == 4 and summary.path.stat().st_size > 0


def test_tensorf_variant_and_reconstruction_only_mode(tmp_path):
    image = write_rgba(tmp_path / "disc.png")
    cfg = tiny_sds_config(max_steps=3, prior=False, field="tensorf")
    pipeline = build_pipeline(cfg, image)
    assert pipeline.guidance is None
    pipeline.train()
    _, losses, _ = pipeline.get_train_loss_dict(step=0)
    assert set(losses) == {"image_loss", "mask_loss", "l1_density"}


def test_missing_model_path_is_a_one_line_error(tmp_path):
    image = write_rgba(tmp_path / "disc.png")
    cfg = tiny_sds_config(max_steps=2)
    cfg.pipeline.guidance.pretrained_model_path = None
    with pytest.raises(ConfigError) as err:
        build_pipeline(cfg, image)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("--pipeline.guidance.pretrained-model-path: not set")
    # What ns-train prints: the trainer turns it into one line and exits.
    cfg.pipeline.datamanager.data = image
    cfg.output_dir = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"^relight3d: error: --pipeline.guidance.pretrained-model-path: not set"):
        cfg.setup(local_rank=0, world_size=1).setup()


def test_bad_reference_images(tmp_path):
    cfg = tiny_sds_config(prior=False)
    with pytest.raises(DataError, match="rgb.png: image has mode RGB"):
        build_pipeline(copy.deepcopy(cfg), write_rgba(tmp_path / "rgb.png", mode="RGB"))
    with pytest.raises(DataError, match="empty.png: the alpha mask is empty"):
        build_pipeline(copy.deepcopy(cfg), write_rgba(tmp_path / "empty.png", empty=True))
    wide = write_rgba(tmp_path / "wide.png", size=(40, 24))
    with pytest.raises(DataError) as err:
        build_pipeline(copy.deepcopy(cfg), wide)
    assert "\n" not in str(err.value)
    assert "wide.png: image is 40x24 but must be square" in str(err.value)
    assert "--pipeline.datamanager.dataparser.pad-to-square True" in str(err.value)
    padded_cfg = copy.deepcopy(cfg)
    padded_cfg.pipeline.datamanager.dataparser.pad_to_square = True
    pipeline = build_pipeline(padded_cfg, wide)
    images = pipeline.datamanager.train_images
    assert tuple(images.shape) == (1, 40, 40, 4)
    # The original pixels sit in the middle rows; the added rows are transparent.
    original = np.asarray(Image.open(wide), dtype=np.float32) / 255.0
    assert torch.allclose(images[0, 8:32], torch.from_numpy(original), atol=1e-6)
    assert float(images[0, :8, :, 3].abs().max()) == 0.0 and float(images[0, 32:, :, 3].abs().max()) == 0.0


def test_shading_normals_blob_and_coarse_to_fine(tmp_path):
    image = write_rgba(tmp_path / "disc.png")
    cfg = tiny_sds_config(prior=False)
    cfg.pipeline.model.blob_density = 8.0
    cfg.pipeline.model.blob_radius = 0.25
    pipeline = build_pipeline(cfg, image)
    model = pipeline.model
    field = model.field
    with torch.no_grad():  # a field whose density is the blob alone: normals are radial in closed form
        field.density_mlp[-1].weight.zero_()
        field.density_mlp[-1].bias.fill_(1.0)  # cancels the NGP density shift of -1
    pts = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1) * 0.3
    sigma = field.density(pts)
    assert torch.allclose(sigma, torch.exp(density_blob(pts, 8.0, 0.25)), rtol=1e-5)
    for method, tol in (("finite_difference", 1e-2), ("autograd", 1e-4)):  # O(eps^2) error for differences
        model.config.normals_method = method
        normals = model.sample_normals(pts)
        assert torch.allclose(normals, torch.nn.functional.normalize(pts, dim=-1), atol=tol), method

    model.eval()
    c2w = pipeline.reference.camera_to_world
    o, d = pinhole_rays(c2w, 12, 12, 40.0)
    black = torch.zeros(3)
    with torch.no_grad():
        albedo = model.render_shaded(o, d, "albedo", background=black, jitter=False)
        lamb = model.render_shaded(o, d, "lambertian", c2w[:, 3], 1.0, black, jitter=False)
        flat = model.render_shaded(o, d, "textureless", c2w[:, 3], 1.0, black, jitter=False)
        centre = 6 * 12 + 6
        lit = model.render_shaded(o, d, "textureless", -d[centre], 0.0, black, with_normals=True, jitter=False)
    assert float(albedo["accumulation"].max()) > 0.99  # the blob is opaque at the centre
    assert torch.allclose(lamb["rgb"], albedo["rgb"], atol=1e-6)  # ambient 1: no shading
    assert torch.allclose(flat["rgb"], flat["accumulation"].expand(-1, 3), atol=1e-6)  # grey, = opacity
    # Light from the camera along the centre ray: the visible surface faces it (n.l ~ 1).
    assert float(lit["rgb"][centre, 0]) > 0.9 and float(lit["orientation_loss"][centre]) < 0.05

    with torch.no_grad():
        field.density_mlp[-1].reset_parameters()  # density depends on the hash grid again
    model.set_coarse_to_fine(0)
    assert field.level_mask.tolist() == [1.0, 1.0, 0.0, 0.0]
    with torch.no_grad():
        before = field.density(pts)
        start = int(field.encoding.offsets[2])
        field.encoding.table[start:] += 5.0  # change only the masked (finest) levels
        assert torch.allclose(field.density(pts), before)
        model.set_coarse_to_fine(cfg.pipeline.model.grid_levels_mask_iters)
        assert field.level_mask is None and not torch.allclose(field.density(pts), before)


@pytest.mark.parametrize("normals_method", ["finite_difference", "autograd"])
def test_chunked_prior_views_match_whole_views(tmp_path, normals_method):
    """Gradient checkpointing per chunk of rays gives the same image and the same parameter gradients."""
    cfg = tiny_sds_config(prior=False)
    cfg.pipeline.model.normals_method = normals_method
    pipeline = build_pipeline(cfg, write_rgba(tmp_path / "disc.png"))
    pipeline.train()
    # Chunking alone: the renderer's choice between one pass and two follows a running mean that every chunk
    # updates (the two agree, see tests/test_rendering.py, but their round-off differs, which finite-difference
    # normals of an untrained density amplify).
    pipeline.model.config.single_pass_above = 2.0
    c2w = pipeline.reference.camera_to_world
    light = torch.nn.functional.normalize(torch.tensor([0.3, -1.0, 0.5]), dim=0)
    weights = torch.randn(10, 10, 3)
    results = []
    for chunk in (0, 16):
        pipeline.config.prior_rays_per_chunk = chunk
        pipeline.model.zero_grad()
        torch.manual_seed(5)  # the same jitter
        out = pipeline.render_view(c2w, 50.0, 10, "lambertian", light, torch.zeros(3), with_normals=True)
        loss = (out["rgb"] * weights).sum() + out["orientation_loss"].sum() + out["normals"].square().sum()
        loss.backward()
        grads = [p.grad.clone() for p in pipeline.model.parameters() if p.grad is not None]
        results.append((out["rgb"].detach(), float(out["num_samples"]), grads))
    (rgb0, n0, g0), (rgb1, n1, g1) = results
    assert n0 == n1 and n0 > 0
    assert torch.allclose(rgb0, rgb1, atol=1e-6)
    assert len(g0) == len(g1) and len(g0) > 0
    # Finite-difference normals of an untrained (nearly constant) density are differences of close numbers over
    # 2 * 1e-2: float round-off of the two summation orders is amplified, so they get a looser tolerance.
    tol = 1e-5 if normals_method == "autograd" else 5e-3
    for a, b in zip(g0, g1):
        assert float((a - b).norm() / a.norm().clamp_min(1e-12)) < tol
