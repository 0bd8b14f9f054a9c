"""DiffusionRenderer's gbuffer_frames layout: encodings by hand, write/read round trips and one-line read errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relight3d.data.gbuffer_frames import (
    GBUFFER_PASSES,
    METADATA_NAME,
    GBufferFrame,
    decode_normals_from_diffusion_renderer,
    encode_base_color,
    encode_depth,
    encode_normals_for_diffusion_renderer,
    read_gbuffer_frames,
    write_gbuffer_frames,
)
from relight3d.errors import DataError

# A camera at (0, -3, 0) looking along world +Y with +Z up (OpenGL c2w: x right, y up, z backward).
LOOK_ALONG_Y = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, -3.0], [0.0, 1.0, 0.0, 0.0]])


def test_normals_are_camera_space_opengl_axes_mapped_to_unit_range():
    # identity camera looks down world -Z: the world normal +Z faces it.
    assert encode_normals_for_diffusion_renderer(torch.tensor([0.0, 0.0, 1.0]), torch.eye(4)).tolist() == [
        0.5,
        0.5,
        1.0,
    ]
    world = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    encoded = encode_normals_for_diffusion_renderer(world, LOOK_ALONG_Y)
    expected = [[0.5, 0.5, 1.0], [0.5, 1.0, 0.5], [1.0, 0.5, 0.5], [0.5, 1.0, 0.5]]  # facing, up, right, unnormalised
    assert torch.allclose(encoded, torch.tensor(expected), atol=1e-6)
    back = decode_normals_from_diffusion_renderer(encoded, LOOK_ALONG_Y)
    assert torch.allclose(back, torch.nn.functional.normalize(world, dim=-1), atol=1e-6)


def test_depth_is_min_max_normalised_per_frame_with_white_background():
    depth = torch.tensor([2.0, 3.0, 6.0, 9.0]).reshape(1, 4, 1)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(1, 4, 1)
    encoded, near, far = encode_depth(depth, mask)
    assert (near, far) == (2.0, 6.0)
    assert encoded.flatten().tolist() == [0.0, 0.25, 1.0, 1.0]
    flat, near, far = encode_depth(torch.full((2, 2, 1), 4.0), torch.ones(2, 2, 1))
    assert flat.flatten().tolist() == [0.0] * 4 and (near, far) == (4.0, 5.0)


def test_base_color_is_srgb_encoded():
    # 1.055 * 0.18 ** (1 / 2.4) - 0.055 = 0.461356; 0.002 is on the linear toe: 12.92 * 0.002.
    assert encode_base_color(torch.tensor([0.18, 0.002, 1.5])).tolist() == pytest.approx(
        [0.461356, 0.02584, 1.0], abs=1e-6
    )


def make_frames(n: int = 2, h: int = 12, w: int = 20) -> list:
    frames = []
    for i in range(n):
        mask = torch.ones(h, w, 1)
        mask[:3, :5] = 0.0
        normals = torch.nn.functional.normalize(torch.randn(h, w, 3), dim=-1)
        c2w = LOOK_ALONG_Y.clone()
        c2w[0, 3] = float(i)
        frames.append(
            GBufferFrame(
                base_color=torch.rand(h, w, 3),
                normals=normals,
                depth=1.0 + 4.0 * torch.rand(h, w, 1),
                roughness=torch.rand(h, w, 1),
                metallic=torch.rand(h, w, 1),
                mask=mask,
                camera_to_world=c2w,
            )
        )
    return frames


def test_layout_is_what_the_forward_renderer_loader_groups(tmp_path):
    clip = write_gbuffer_frames(tmp_path / "gbuffer_frames", make_frames(2), clip_name="chair")
    assert clip == tmp_path / "gbuffer_frames" / "chair"
    names = sorted(p.name for p in clip.iterdir())
    expected = [f"0000.{i:04d}.{k}.png" for i in range(2) for k in (*GBUFFER_PASSES, "mask", "depth16")]
    assert names == sorted([*expected, METADATA_NAME])
    # VideoGBufferDataset: images below the folder, keyed by the path up to the first dot of the file name, and
    # each pass picked by the substring ".<pass>." (re-written here, not their code).
    root = tmp_path / "gbuffer_frames"
    rel = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in (".png", ".jpg"))
    keys = {re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", r).group(1) for r in rel}
    assert keys == {"chair/0000"}
    for name in GBUFFER_PASSES:
        picked = [r for r in rel if f".{name}." in r]
        assert picked == [f"chair/0000.0000.{name}.png", f"chair/0000.0001.{name}.png"]
        with Image.open(root / picked[0]) as im:
            assert im.mode == "RGB"  # three 8-bit channels even for roughness / metallic / depth
    with Image.open(clip / "0000.0000.roughness.png") as im:
        rgb = np.asarray(im)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    with Image.open(clip / "0000.0000.normal.png") as im:
        assert tuple(np.asarray(im)[0, 0]) == (255, 255, 255)  # outside the mask: white


def test_png_round_trip_within_quantisation(tmp_path):
    frames = make_frames(2)
    write_gbuffer_frames(tmp_path, frames)
    back = read_gbuffer_frames(tmp_path)
    assert len(back) == 2
    for before, after in zip(frames, back):
        inside = before.mask[..., 0] > 0.5
        step = 0.5 / 255 + 1e-6
        srgb_diff = encode_base_color(after.base_color) - encode_base_color(before.base_color)
        assert srgb_diff[inside].abs().max() <= step
        assert (after.roughness - before.roughness)[inside].abs().max() <= step
        assert (after.metallic - before.metallic)[inside].abs().max() <= step
        assert torch.equal(after.mask, before.mask)
        # each normal component within half an 8-bit step of 2 (the [-1, 1] range), then renormalised
        assert (after.normals - before.normals)[inside].abs().max() <= 2.5 / 255
        d = before.depth[inside]
        assert (after.depth - before.depth)[inside].abs().max() <= float(d.max() - d.min()) / 131070 + 1e-5
        assert torch.allclose(after.camera_to_world, before.camera_to_world)
        outside = ~inside
        assert torch.allclose(after.base_color[outside], torch.ones(1))  # white background
        assert torch.allclose(after.depth[outside], d.max().expand_as(after.depth[outside]), atol=1e-5)


def test_jpeg_round_trip_of_flat_frames(tmp_path):
    frame = GBufferFrame.empty(16, 16)
    write_gbuffer_frames(tmp_path, [frame], image_format="jpg")
    assert (tmp_path / "scene" / "0000.0000.normal.jpg").is_file()
    back = read_gbuffer_frames(tmp_path)[0]
    assert torch.allclose(back.normals, frame.normals, atol=0.02)
    assert torch.allclose(back.roughness, frame.roughness, atol=0.01)


def test_missing_corrupt_or_resized_files_are_data_errors_naming_them(tmp_path):
    clip = write_gbuffer_frames(tmp_path, make_frames(1))
    missing = clip / "0000.0000.metallic.png"
    missing.unlink()
    with pytest.raises(DataError) as err:
        read_gbuffer_frames(tmp_path)
    assert err.value.path == missing and "0000.0000.metallic.png" in str(err.value)

    Image.new("RGB", (7, 5)).save(missing)
    with pytest.raises(DataError, match="expected 20x12") as err:
        read_gbuffer_frames(tmp_path)
    assert err.value.path == missing

    missing.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError) as err:
        read_gbuffer_frames(tmp_path)
    assert err.value.path == missing

    (clip / METADATA_NAME).unlink()
    with pytest.raises(DataError) as err:
        read_gbuffer_frames(tmp_path)
    assert err.value.path == clip / METADATA_NAME


def test_writing_stays_in_the_clip_and_never_mixes_stale_frames(tmp_path):
    with pytest.raises(ValueError, match="clip_name"):
        write_gbuffer_frames(tmp_path / "out", make_frames(1), clip_name="../escape")
    assert not (tmp_path / "escape").exists()
    write_gbuffer_frames(tmp_path / "out", make_frames(3))
    with pytest.raises(DataError, match="overwrite"):
        write_gbuffer_frames(tmp_path / "out", make_frames(1))
    clip = write_gbuffer_frames(tmp_path / "out", make_frames(1), overwrite=True)
    assert not any(Path(p).name.startswith("0000.0001.") for p in clip.iterdir())
    assert len(read_gbuffer_frames(tmp_path / "out")) == 1
