"""The one renderer (OccupancyFieldModel.march / render_rays) against closed forms, and SDS shading built on it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Type

import pytest
import torch
import torch.nn.functional as F
from nerfstudio.data.scene_box import SceneBox

from relight3d.fields.base import RelightableField
from relight3d.models.base import OccupancyFieldModel, OccupancyFieldModelConfig
from relight3d.models.sds import SDSTensoRFModelConfig

BOX = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
RED, GREEN, BLUE = torch.eye(3)


class AnalyticField(RelightableField):
    """A closed-form density; the colour is a function of position (features are the positions)."""

    def __init__(self, aabb, density: Callable, color: Callable) -> None:  # noqa: ANN001
        super().__init__(aabb)
        self._density, self._color = density, color
        self.appearance_dim = 3

    def density(self, positions):  # noqa: ANN001, ANN201
        return self.zero_outside(self._density(positions), self.normalize_positions(positions))

    def appearance_features(self, positions):  # noqa: ANN001, ANN201
        return positions

    def color(self, features, directions):  # noqa: ANN001, ANN201
        return self._color(features)

    def geometry_parameters(self):  # noqa: ANN201
        return []

    def appearance_parameter_groups(self):  # noqa: ANN201
        return {}


@dataclass
class AnalyticModelConfig(OccupancyFieldModelConfig):
    _target: Type = field(default_factory=lambda: AnalyticModel)
    density: Callable = lambda p: torch.ones(p.shape[0])
    color: Callable = lambda p: torch.ones(p.shape[0], 3)
    samples_per_diagonal: int = 4096
    max_steps: int = 8192
    background_color: str = "black"


class AnalyticModel(OccupancyFieldModel):
    config: AnalyticModelConfig

    def build_field(self, aabb):  # noqa: ANN001, ANN201
        return AnalyticField(aabb, self.config.density, self.config.color)


def analytic_model(**kwargs) -> AnalyticModel:  # noqa: ANN003
    model = AnalyticModelConfig(**kwargs).setup(scene_box=BOX, num_train_data=1)  # every occupancy cell is occupied
    return model.eval()


def sds_model():  # noqa: ANN201
    """A small relight3d-sds-tensorf model: a density blob (peak sigma ~ 50) in a nearly empty random field."""
    config = SDSTensoRFModelConfig(
        init_resolution=16,
        n_density_components=4,
        n_appearance_components=4,
        appearance_dim=8,
        blob_density=12.0,
        blob_radius=0.4,
    )
    model = config.setup(scene_box=BOX, num_train_data=1)
    model.update_occupancy()
    return model


def x_rays(y: torch.Tensor, z: torch.Tensor):  # noqa: ANN201
    """Rays along +x from x = -3, at heights (y, z)."""
    origins = torch.stack([torch.full_like(y, -3.0), y, z], dim=-1)
    return origins, torch.tensor([[1.0, 0.0, 0.0]]).expand_as(origins).contiguous()


def test_constant_density_transmittance_and_depth():
    """A constant density sigma over the box: opacity 1 - exp(-sigma L) over a chord L, and the expected depth of an
    exponential distribution truncated to the chord."""
    sigma = 0.7
    model = analytic_model(density=lambda p: torch.full((p.shape[0],), sigma))
    y = torch.tensor([0.0, 0.5, -0.8, 0.2])
    origins, directions = x_rays(y, torch.zeros_like(y))
    with torch.no_grad():
        out = model.render_rays(origins, directions)
    chord = 2.0  # x from -1 to 1 at any height inside the box
    expect_acc = 1.0 - math.exp(-sigma * chord)
    tol = sigma * model.render_step_size  # one step of discretisation at the box's faces
    assert torch.allclose(out["accumulation"][:, 0], torch.full((4,), expect_acc), atol=tol)
    near = 2.0  # the box's face, from x = -3
    expect_depth = near + 1.0 / sigma - chord * math.exp(-sigma * chord) / expect_acc
    assert torch.allclose(out["depth"][:, 0], torch.full((4,), expect_depth), atol=2 * model.render_step_size)
    assert torch.allclose(out["rgb"], out["accumulation"].expand(-1, 3), atol=1e-5)  # white field on black


def test_composited_colour_of_two_halves_on_a_background():
    """Red for x < 0 and green for x > 0, sigma everywhere, blue behind: each half's opacity is 1 - exp(-sigma)."""
    sigma = 1.3
    model = analytic_model(
        density=lambda p: torch.full((p.shape[0],), sigma),
        color=lambda p: torch.where(p[:, :1] < 0, RED, GREEN),
    )
    origins, directions = x_rays(torch.tensor([0.1, -0.3]), torch.tensor([0.2, 0.6]))
    with torch.no_grad():
        out = model.render_rays(origins, directions, background=BLUE)
    a = 1.0 - math.exp(-sigma)  # the opacity of one half (length 1)
    expect = RED * a + GREEN * (1.0 - a) * a + BLUE * (1.0 - a) ** 2
    assert torch.allclose(out["rgb"], expect.expand(2, 3), atol=2 * sigma * model.render_step_size)
    albedo = model.render_rays(origins, directions, ("albedo",))["albedo"]  # unshaded colour, no background
    assert torch.allclose(albedo, (RED * a + GREEN * (1.0 - a) * a).expand(2, 3), atol=0.01)


@pytest.mark.parametrize("method", ["autograd", "finite_difference"])
def test_rendered_normals_of_a_sphere_are_the_exact_surface_normals(method):
    """A sharp ball of radius r: the rendered normal of a ray is the sphere's normal where the ray meets it."""
    radius, sharp = 0.6, 400.0
    model = analytic_model(
        density=lambda p: 2000.0 * torch.sigmoid((radius - p.norm(dim=-1)) * sharp),
        normals_method=method,
        normals_epsilon=1e-4,
    )
    y = torch.tensor([0.0, 0.3, -0.2, 0.45, 0.1])
    z = torch.tensor([0.0, 0.1, 0.35, -0.2, -0.5])
    origins, directions = x_rays(y, z)
    with torch.no_grad():
        out = model.render_rays(origins, directions, ("normals", "accumulated_normals", "orientation_loss"))
    hit = torch.stack([-(radius**2 - y**2 - z**2).sqrt(), y, z], dim=-1)  # first intersection with the sphere
    exact = hit / radius
    assert torch.allclose(out["accumulation"][:, 0], torch.ones(5), atol=1e-3)
    assert float((out["normals"] - exact).norm(dim=-1).max()) < 0.02
    assert torch.allclose(F.normalize(out["accumulated_normals"], dim=-1), out["normals"], atol=1e-5)
    assert float(out["orientation_loss"].max()) < 1e-3  # every visible normal faces the camera
    with pytest.raises(ValueError, match="unknown outputs"):
        model.render_rays(origins, directions, ("specular",))


def test_render_is_the_same_with_and_without_gradients():
    """Gradients on (training) or off (evaluation): one march, one set of weights, the same image."""
    model = sds_model()
    model.config.warmup_sample_weight_threshold = 1e-2  # drops samples in the middle of rays too
    origins, directions = x_rays(torch.linspace(-0.8, 0.8, 24), torch.linspace(0.5, -0.5, 24))
    with torch.no_grad():
        off = model.render_rays(origins, directions, ("normals",))
    on = model.render_rays(origins, directions, ("normals",))
    assert float(on["num_visible_samples"]) < float(on["num_samples"])  # some samples were dropped
    for key in ("rgb", "accumulation", "depth", "normals"):
        assert torch.allclose(on[key], off[key], atol=1e-6), key


def test_single_pass_training_renders_and_differentiates_as_the_two_passes():
    """When training keeps most samples, one pass with gradients replaces the gradient-free first pass: the same
    image, and the same gradient for every parameter."""
    model = sds_model().train()
    model.config.warmup_sample_weight_threshold = 1e-2  # drops samples in the middle of rays too
    origins, directions = x_rays(torch.linspace(-0.8, 0.8, 24), torch.linspace(0.5, -0.5, 24))
    results = []
    for kept_fraction in (0.0, 1.0):  # below and above single_pass_above
        model._kept_fraction = kept_fraction
        model.zero_grad()
        out = model.render_rays(origins, directions, ("normals",))
        (out["rgb"].square().sum() + out["depth"].sum()).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (two, two_grads), (one, one_grads) = results
    assert float(one["num_visible_samples"]) < float(one["num_samples"])  # some samples were dropped
    for key in ("rgb", "accumulation", "depth", "normals", "num_visible_samples"):
        assert torch.allclose(one[key], two[key], atol=1e-6), key
    assert two_grads.keys() == one_grads.keys() and len(two_grads) >= 4
    for name, grad in two_grads.items():
        assert torch.allclose(one_grads[name], grad, rtol=1e-5, atol=1e-7), name
    assert 0.0 < model._kept_fraction < 1.0  # training batches update the running fraction


@pytest.mark.parametrize("shading", ["albedo", "lambertian", "textureless"])
def test_sds_render_is_render_rays_plus_the_shading_post_step(shading):
    """render_shaded equals the base renderer's samples, shaded by hand (ambient + (1 - ambient) max(0, n.l)) and
    composited by hand."""
    torch.manual_seed(0)
    model = sds_model()
    origins, directions = x_rays(torch.linspace(-0.6, 0.6, 20), torch.linspace(-0.4, 0.5, 20))
    light = F.normalize(torch.tensor([-1.0, 0.4, 0.7]), dim=0)
    ambient, background = 0.25, torch.tensor([0.1, 0.2, 0.3])
    out = model.render_shaded(origins, directions, shading, light, ambient, background, jitter=False)

    samples = model.march(origins, directions)
    ids, w = samples.ray_ids, samples.weights
    albedo = model.field.color(samples.features, samples.directions)
    normals = model.field.normals(samples.positions, method="finite_difference", epsilon=model.config.normals_epsilon)
    lambert = (ambient + (1 - ambient) * (normals @ light).clamp_min(0))[:, None]
    colors = {"albedo": albedo, "lambertian": albedo * lambert, "textureless": lambert.expand(-1, 3)}[shading]
    acc = torch.zeros(20).index_add_(0, ids, w)[:, None]
    rgb = torch.zeros(20, 3).index_add_(0, ids, w[:, None] * colors) + (1 - acc) * background
    assert float((1 - acc).abs().max()) > 0.1 and float(acc.max()) > 0.5  # rays both hit and miss the blob
    assert torch.allclose(out["rgb"], rgb, atol=1e-5)
    assert torch.allclose(out["accumulation"], acc, atol=1e-6)
    if shading != "albedo":
        n_sum = torch.zeros(20, 3).index_add_(0, ids, w[:, None] * normals)
        facing = (normals * samples.directions).sum(-1).clamp_min(0).square()
        assert torch.allclose(out["normals"], n_sum, atol=1e-5)
        assert torch.allclose(out["orientation_loss"][:, 0], torch.zeros(20).index_add_(0, ids, w * facing), atol=1e-6)
    else:
        base = model.render_rays(origins, directions, background=background)
        assert torch.allclose(out["rgb"], base["rgb"]) and "normals" not in out
        lambert_rgb = model.render_shaded(origins, directions, "lambertian", light, 1.0, background, jitter=False)
        assert torch.allclose(lambert_rgb["rgb"], out["rgb"], atol=1e-6)  # all ambient: no shading
