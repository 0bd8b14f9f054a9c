"""The field's material head (fit, G-buffers, targets from disk) and a G-buffer prior run end to end from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from relight3d.cli import main
from relight3d.data.gbuffer_frames import (
    GBufferFrame,
    encode_base_color,
    read_material_frames,
    write_gbuffer_frames,
)
from relight3d.errors import DataError
from relight3d.fields.material import MATERIAL_CHANNELS, MaterialHead
from relight3d.pipelines.relight_material import fit_material_head, material_gbuffers, needs_material
from relight3d.priors.diffusion_renderer import DiffusionRendererPrior, tiny_builtin_folder
from relight3d.priors.physical import PhysicalPrior

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def _sphere_points(n_views: int = 2, side: int = 24):
    """Points on the unit sphere's front half as ``[n, side, side, 3]`` with a disc foreground."""
    u = torch.linspace(-0.9, 0.9, side)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    fg = (xx**2 + yy**2) < 0.8
    z = torch.sqrt((1 - xx**2 - yy**2).clamp_min(0.0))
    points = torch.stack([xx, yy, z], -1)
    views = torch.stack([points * torch.tensor([1.0, 1.0, 1.0 - 2.0 * (i % 2)]) for i in range(n_views)])
    return views, fg.expand(n_views, side, side)


def _known_material(points: torch.Tensor):
    """A smooth base colour and roughness that vary with position; metallic 1 on the upper half."""
    base = torch.stack([0.2 + 0.3 * (points[..., 0] + 1), 0.5 + 0.2 * points[..., 1], 0.4 - 0.2 * points[..., 2]], -1)
    return {"base_color": base, "roughness": 0.3 + 0.2 * (points[..., :1] + 1) / 2,
            "metallic": (points[..., 1:2] > 0.0).float()}  # fmt: skip


def test_material_head_fits_a_known_material_and_renders_it_as_gbuffers() -> None:
    torch.manual_seed(0)
    points, fg = _sphere_points()
    targets = _known_material(points)
    head = MaterialHead(AABB)
    assert not bool(head.fitted)
    rms = fit_material_head(head, points, fg, targets, steps=300, learning_rate=2e-2)
    assert bool(head.fitted) and rms < 0.05, rms
    out = material_gbuffers(head, points, fg)
    assert set(out) == set(MATERIAL_CHANNELS)
    for name, channels in MATERIAL_CHANNELS.items():
        assert out[name].shape == (*fg.shape, channels)
        assert float(out[name][~fg].abs().max()) == 0.0  # background left at 0
    assert float((out["base_color"] - targets["base_color"])[fg].abs().mean()) < 0.03
    # an unfitted head is far off: the fit did the work
    fresh = material_gbuffers(MaterialHead(AABB), points, fg)
    assert float((fresh["base_color"] - targets["base_color"])[fg].abs().mean()) > 0.1


def test_material_head_rejects_bad_targets() -> None:
    points, fg = _sphere_points()
    targets = _known_material(points)
    with pytest.raises(ValueError, match="base_color"):
        fit_material_head(MaterialHead(AABB), points, fg, {**targets, "base_color": targets["base_color"][..., :2]}, 1)
    with pytest.raises(ValueError, match="no object pixel"):
        fit_material_head(MaterialHead(AABB), points, torch.zeros_like(fg), targets, 1)


def test_which_priors_need_a_material_head() -> None:
    assert needs_material(DiffusionRendererPrior.required_gbuffers)
    assert not needs_material(PhysicalPrior.required_gbuffers) and not needs_material(("normals", "accumulation"))


def test_material_targets_from_inverse_renderer_frames(tmp_path: Path) -> None:
    """DiffusionRenderer's inverse-renderer layout (no relight3d sidecar needed), resized to the views' size."""
    frames = []
    for i in range(3):
        frame = GBufferFrame.empty(16, 16)
        frame.base_color = torch.full((16, 16, 3), 0.1 * (i + 1))
        frame.roughness = torch.full((16, 16, 1), 0.25 * (i + 1))
        frame.metallic = torch.full((16, 16, 1), float(i == 2))
        frames.append(frame)
    clip = write_gbuffer_frames(tmp_path / "gbuffer_frames", frames, image_format="jpg")
    for extra in clip.glob("*.mask.png"):  # what the inverse renderer does not write
        extra.unlink()
    (clip / "relight3d_gbuffer_frames.json").unlink()
    read = read_material_frames(clip, 3, 8, 8)
    assert read["base_color"].shape == (3, 8, 8, 3) and read["metallic"].shape == (3, 8, 8, 1)
    for i in range(3):
        assert abs(float(read["base_color"][i].mean()) - 0.1 * (i + 1)) < 0.01  # 8-bit sRGB JPEG of a flat colour
        assert abs(float(read["roughness"][i].mean()) - 0.25 * (i + 1)) < 0.01
        assert abs(float(read["metallic"][i].mean()) - float(i == 2)) < 0.01
    with pytest.raises(DataError, match="holds 3 frames .* expected 4"):
        read_material_frames(clip, 4, 8, 8)
    next(clip.glob("0000.0001.roughness.*")).unlink()
    with pytest.raises(DataError, match="0000.0001.roughness.jpg: missing"):
        read_material_frames(clip, 3, 8, 8)
    with pytest.raises(DataError, match="no such folder"):
        read_material_frames(tmp_path / "nope", 3, 8, 8)


def test_diffusion_renderer_builtin_relights_end_to_end_from_the_cli(
    trained_object_run: Path, tiny_object_folder: Path, tmp_path: Path, one_thread
) -> None:
    """``relight3d relight --prior diffusion-renderer --prior.backend builtin``: the field's material head is fitted
    to the physical prior's albedo, the G-buffers go to the (tiny, random) builtin model, both stages run, the views
    are scored beside the no-relighting baseline and the report and video are written."""
    weights = tiny_builtin_folder(tmp_path / "tiny_dr")
    out = tmp_path / "out"
    code = main(
        [
            "relight", "--field-run", str(trained_object_run),
            "--envmap", str(tiny_object_folder / "envmaps" / "sky.exr"), "--output", str(out),
            "--prior", "diffusion-renderer", "--prior.backend", "builtin", "--prior-path", str(weights),
            "--prior.num-inference-steps", "2", "--prior.envmap-height=16", "--stage1-steps", "3",
            "--stage2-steps", "2", "--video-frames", "2", "--device", "cpu",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())["sky"]
    methods = {k.split("/")[0] for k in summary if "/" in k}
    assert methods == {"relight3d-gaffer (diffusion-renderer)", "no relighting"}, methods
    assert summary["material"].startswith("fitted to the physical prior's albedo (RMS error ")
    assert (out / "report" / "report.html").is_file() and (out / "sky" / "rotating_light.mp4").is_file()
    stage1 = next((out / "sky").glob("sky/relight3d-gaffer/*/stage1"))
    assert len(list((stage1 / "pred_image").iterdir())) == 16


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prior.nope", "1"], "relight3d: error: --prior.nope: DiffusionRendererPriorConfig has no such field"),
        (["--prior.backend", "cloud"], "relight3d: error: --prior.backend: expected one of checkout, builtin"),
        (["--prior.num-inference-steps", "2.5"], "relight3d: error: --prior.num-inference-steps: expected an integer"),
    ],
)
def test_bad_prior_options_are_one_line_errors(tmp_path: Path, capsys, extra, message) -> None:
    env = tmp_path / "a.exr"
    from relight3d.lighting import write_envmap

    write_envmap(env, torch.ones(4, 8, 3))
    argv = ["relight", "--field-run", str(tmp_path / "run.yml"), "--envmap", str(env), "--output",
            str(tmp_path / "out"), "--prior", "diffusion-renderer", *extra]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(message), err


def test_prior_options_belong_to_relight_only(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["envmap", "info", str(tmp_path / "a.exr"), "--prior.backend", "builtin"])
    assert exit_.value.code == 2
    assert "--prior.<field> options are for relight3d relight, not relight3d envmap" in capsys.readouterr().err


def test_difareli_relights_end_to_end_from_the_cli(
    trained_object_run: Path, tiny_object_folder: Path, tmp_path: Path, one_thread
) -> None:
    """``relight3d relight --prior difareli`` with tiny random weights: normals and coverage G-buffers, DDIM
    inversion under the source light and decoding under the target's, both stages, scores and report."""
    from relight3d.priors.difareli import tiny_difareli_folder

    weights = tiny_difareli_folder(tmp_path / "tiny_difareli")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="codes"):
        code = main(
            [
                "relight", "--field-run", str(trained_object_run),
                "--envmap", str(tiny_object_folder / "envmaps" / "sky.exr"), "--output", str(out),
                "--prior", "difareli", "--prior-path", str(weights), "--prior.num-inference-steps", "3",
                "--stage1-steps", "3", "--stage2-steps", "2", "--video-frames", "2", "--device", "cpu",
            ]
        )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())["sky"]
    assert {k.split("/")[0] for k in summary if "/" in k} == {"relight3d-gaffer (difareli)", "no relighting"}
    assert "material" not in summary  # DiFaReli needs no material G-buffers: no head is fitted
    assert (out / "report" / "report.html").is_file() and (out / "sky" / "rotating_light.mp4").is_file()


def test_exported_gbuffers_read_back_and_shade_like_the_fields(trained_object_run: Path, tmp_path: Path) -> None:
    """``relight3d export gbuffers``: the frames written in DiffusionRenderer's layout load in the reader the
    stand-in entry point uses, and read back the field's G-buffers (normals, depth, material) to 8-bit precision:
    Lambertian shading from the exported normals equals shading from the field's normals."""
    from relight3d.data.gbuffer_frames import read_gbuffer_frames
    from relight3d.lighting import PrefilteredEnvmap, diffuse_shading
    from relight3d.pipelines.gbuffer_export import field_pipeline, render_gbuffer_frames, view_cameras

    pipeline = field_pipeline(trained_object_run, field_cache_dir=tmp_path / "cache")
    cameras = view_cameras(pipeline, "test")
    frames = render_gbuffer_frames(pipeline, cameras)
    assert len(frames) == 4 and pipeline.state.material_origin.startswith("fitted to the physical prior's albedo")
    write_gbuffer_frames(tmp_path / "gbuffer_frames", frames, clip_name="test")
    read = read_gbuffer_frames(tmp_path / "gbuffer_frames", "test")
    v = torch.linspace(0, 1, 8)[:, None, None]
    env = PrefilteredEnvmap.from_envmap(torch.cat([1.5 - v, 0.5 + v, 0.8 * torch.ones_like(v)], -1).expand(8, 16, 3))
    for mine, back in zip(frames, read):
        inside = mine.mask[..., 0] > 0.999  # pixels with full coverage round-trip exactly (others are blended)
        assert int(inside.sum()) > 20
        assert torch.allclose(back.camera_to_world, mine.camera_to_world[:3, :4], atol=1e-6)
        assert float((back.normals - mine.normals)[inside].abs().max()) < 0.012
        shading_field = diffuse_shading(mine.normals, env)[inside]
        shading_export = diffuse_shading(back.normals, env)[inside]
        assert float(((shading_export - shading_field).abs() / shading_field.abs().clamp_min(0.1)).max()) < 0.02
        near, far = float(mine.depth[inside].min()), float(mine.depth[inside].max())
        assert float((back.depth - mine.depth)[inside].abs().max()) < (far - near) / 65535 + 1e-5
        for name in ("roughness", "metallic"):
            assert float((getattr(back, name) - getattr(mine, name))[inside].abs().max()) < 0.5 / 255 + 1e-3
        encoded = encode_base_color(back.base_color) - encode_base_color(mine.base_color)  # sRGB, as stored
        assert float(encoded[inside].abs().max()) < 0.5 / 255 + 1e-3  # + the white blended in at coverage 0.999
    # the material is the fitted head's: not a constant, and close to the physical albedo it was fitted to
    base = torch.stack([f.base_color for f in frames])
    assert float(base[torch.stack([f.mask[..., 0] > 0.999 for f in frames])].std(0).mean()) > 0.01


def test_export_gbuffers_command_writes_an_orbit_and_refuses_to_overwrite(
    trained_object_run: Path, tmp_path: Path, capsys
) -> None:
    from relight3d.data.gbuffer_frames import read_gbuffer_frames

    argv = ["export", "gbuffers", "--field-run", str(trained_object_run), "--views", "orbit", "--frames", "2",
            "--output", str(tmp_path / "gb"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert "wrote " in capsys.readouterr().out
    assert len(read_gbuffer_frames(tmp_path / "gb", "orbit")) == 2
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"relight3d: error: {tmp_path / 'gb' / 'orbit'}: already holds files; pass --overwrite to replace the clip"
    )
