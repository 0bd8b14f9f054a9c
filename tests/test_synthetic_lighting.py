"""relight3d's tracer under an environment map: closed forms for the irradiance, cast shadows, and the layout of a
relighting scene (source light for training, target lights for held-out views)."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from PIL import Image

from relight3d.data.synthetic import (
    EnvLight,
    SceneSpec,
    _albedo,
    envmap_irradiance,
    intersect,
    trace,
    write_relighting_scene,
)


def _rays_at_origin(n: int = 64):  # noqa: ANN202
    """Rays from a ring of points 3 units away towards the origin."""
    phi = torch.linspace(0, 2 * math.pi, n + 1, dtype=torch.float64)[:-1]
    origins = torch.stack([3 * torch.cos(phi), 3 * torch.sin(phi), 0.6 * torch.sin(3 * phi)], -1)
    return origins, torch.nn.functional.normalize(-origins, dim=-1)


def test_uniform_map_gives_albedo_times_radiance() -> None:
    """Under uniform radiance L every unoccluded normal has irradiance pi L: a Lambertian sphere shows albedo * L."""
    light = EnvLight.from_envmap(torch.full((32, 64, 3), 0.5), height=16)
    origins, dirs = _rays_at_origin()
    radiance, hit = trace(origins, dirs, "sphere", light)
    t, _, which = intersect(origins, dirs, "sphere")
    albedo = _albedo(origins + dirs * t[:, None], which)
    assert bool(hit.all())
    assert torch.allclose(radiance, 0.5 * albedo, rtol=0.01)


def test_irradiance_of_a_single_bright_texel_follows_the_cosine() -> None:
    env = torch.zeros(16, 32, 3)
    env[3, 16] = 100.0  # one texel above the horizon, towards +X
    light = EnvLight.from_envmap(env, height=16)
    k = int(light.power[:, 0].argmax())
    normals = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    points = 5.0 * normals  # far outside the sphere scene's only primitive
    e = envmap_irradiance(points, normals, light, "sphere")
    expected = light.power[k, 0] * (normals @ light.directions[k]).clamp_min(0.0)
    assert torch.allclose(e[:, 0], expected, rtol=1e-5)


def test_cast_shadows_darken_only_occluded_points() -> None:
    """The big sphere shades the top of the box below it; its own top sees the whole sky either way."""
    light = EnvLight.from_envmap(torch.ones(16, 32, 3), height=16)
    points = torch.tensor([[-0.35, 0.0, -0.3], [0.0, 0.0, 0.7]], dtype=torch.float64)  # box top, sphere top
    up = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    with_shadows = envmap_irradiance(points, up, light, "objects", shadows=True)[:, 0]
    without = envmap_irradiance(points, up, light, "objects", shadows=False)[:, 0]
    assert float(with_shadows[0]) < 0.5 * float(without[0])
    assert torch.allclose(with_shadows[1], without[1])
    assert abs(float(without[1]) - math.pi) < 0.03 * math.pi


def test_relighting_scene_layout(tmp_path) -> None:
    from relight3d.demo import shipped_envmaps

    maps = shipped_envmaps()
    spec = SceneSpec(resolution=16, n_train=3, n_test=2, supersample=1, light_height=8)
    scene = write_relighting_scene(tmp_path, spec, maps["courtyard"], [maps["sunrise"], maps["studio"]])
    assert sorted(scene.targets) == ["studio", "sunrise"]
    meta = json.loads((scene.scene / "meta.json").read_text())
    assert meta["lights"][0]["name"] == "courtyard" and (scene.scene / meta["lights"][0]["file"]).is_file()
    test = json.loads((scene.scene / "transforms_test.json").read_text())
    images = {}
    for name, (envmap, folder) in scene.targets.items():
        assert envmap.is_file()
        held_out = json.loads((folder / "transforms_test.json").read_text())
        assert [f["transform_matrix"] for f in held_out["frames"]] == [f["transform_matrix"] for f in test["frames"]]
        images[name] = np.asarray(Image.open(folder / "test" / "r_000.png"), dtype=np.float32)
    source = np.asarray(Image.open(scene.scene / "test" / "r_000.png"), dtype=np.float32)
    # Same object (same alpha), different light (different colours).
    for rgba in images.values():
        assert np.array_equal(rgba[..., 3], source[..., 3])
        assert np.abs(rgba[..., :3] - source[..., :3])[source[..., 3] > 250].mean() > 5.0
    # Written once: a second call with the same spec and maps reuses the renders.
    stamp = (scene.scene / "train" / "r_000.png").stat().st_mtime_ns
    write_relighting_scene(tmp_path, spec, maps["courtyard"], [maps["sunrise"], maps["studio"]])
    assert (scene.scene / "train" / "r_000.png").stat().st_mtime_ns == stamp
