"""What the input checks let through: 16-bit PNGs with all their bits, paths outside a dataset when allowed, padded
single images in the user cache, ground truth without alpha under --no-mask, good maps and options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bad_input_cases import Ctx, run_main
from bad_input_files import blender, exr, objaverse, outside_file, png, sky, symlink_out, write_frames
from PIL import Image


def test_sixteen_bit_pngs_keep_all_sixteen_bits(tmp_path: Path) -> None:
    """16-bit grey (PIL I;16), RGB and RGBA PNGs are read as value / 65535, also by the training datamanager."""
    import cv2

    from relight3d.data.blender import CheckedBlenderDataParserConfig
    from relight3d.data.datamanager import InMemoryDataManagerConfig
    from relight3d.data.validation import read_image_float32

    rng = np.random.default_rng(0)
    grey = (rng.integers(0, 256, (16, 16)) * 257 + rng.integers(1, 200, (16, 16))).astype(np.uint16)  # low byte != high
    rgba = np.stack([grey, grey[::-1], grey.T, np.full_like(grey, 65535)], -1)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    cv2.imwrite(str(tmp_path / "rgb.png"), np.ascontiguousarray(rgba[..., 2::-1]))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.ascontiguousarray(rgba[..., [2, 1, 0, 3]]))
    expected = rgba.astype(np.float32) / 65535.0
    np.testing.assert_allclose(read_image_float32(tmp_path / "grey.png"), expected[..., [0, 0, 0]], atol=1e-7)
    np.testing.assert_allclose(read_image_float32(tmp_path / "rgb.png"), expected[..., :3], atol=1e-7)
    np.testing.assert_allclose(read_image_float32(tmp_path / "rgba.png"), expected, atol=1e-7)

    scene = blender(tmp_path / "scene")
    for i in range(2):
        Image.fromarray(grey).save(scene / "train" / f"r_{i}.png")
    config = InMemoryDataManagerConfig(dataparser=CheckedBlenderDataParserConfig(data=scene))
    datamanager = config.setup(device="cpu", test_mode="val")
    images = datamanager.train_images
    assert images.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(images[0].numpy(), expected[..., [0, 0, 0]], atol=1e-6)


def test_outside_paths_are_refused_unless_allowed(tmp_path: Path) -> None:
    from relight3d.data.blender import CheckedBlenderDataParserConfig
    from relight3d.data.objaverse import ObjaverseDataParserConfig
    from relight3d.errors import DataError

    scene = blender(tmp_path / "scene")
    secret = outside_file(scene)
    write_frames(scene, lambda f: f[1].__setitem__("file_path", str(secret)[:-4]))
    with pytest.raises(DataError, match="transforms_train.json: frame 1: file_path .*secret.* resolves outside"):
        CheckedBlenderDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    outputs = CheckedBlenderDataParserConfig(data=scene, allow_outside_paths=True).setup().get_dataparser_outputs()
    assert outputs.image_filenames[1] == secret

    folder = objaverse(tmp_path / "obj")
    symlink_out(folder / "001_000_studio.png", png(tmp_path / "elsewhere.png"))
    parser = {"data": folder, "train_views": (0, 2), "eval_views": (0, 2)}
    with pytest.raises(DataError, match="001_000_studio.png: the image '001_000_studio.png' resolves outside"):
        ObjaverseDataParserConfig(**parser).setup().get_dataparser_outputs("train")
    outputs = ObjaverseDataParserConfig(**parser, allow_outside_paths=True).setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 2


def test_padded_images_are_cached_in_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relight3d.data.single_image import pad_image_to_square

    image = png(tmp_path / "wide.png", (24, 12))
    monkeypatch.setenv("RELIGHT3D_CACHE", str(tmp_path / "cache"))
    padded = pad_image_to_square(image)
    assert padded.parent == tmp_path / "cache" / "padded"
    square = np.asarray(Image.open(padded))
    assert square.shape == (24, 24, 4) and (square[:6, :, 3] == 0).all() and (square[18:, :, 3] == 0).all()
    np.testing.assert_array_equal(square[6:18], np.asarray(Image.open(image)))
    assert pad_image_to_square(image) == padded  # reused
    png(image, (24, 12), empty_alpha=True)
    assert pad_image_to_square(image) != padded  # keyed by content
    monkeypatch.delenv("RELIGHT3D_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pad_image_to_square(image).parent == tmp_path / "home" / ".cache" / "relight3d" / "padded"


def test_eval_no_mask_scores_ground_truth_without_alpha(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for view in ("r_000", "r_001"):
        png(tmp_path / "gt" / f"{view}.png", mode="RGB")
        png(tmp_path / "pred" / f"{view}.png", mode="RGB")
    argv = ["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--lpips", "none", "--output", tmp_path / "r"]
    code, stderr = run_main(argv, capsys)
    assert code == 2 and "no alpha channel" in stderr
    code, stderr = run_main([*argv, "--no-mask"], capsys)
    assert code == 0, stderr
    report = json.loads((tmp_path / "r" / "records.json").read_text())
    assert any("no object mask" in note for note in report["notes"])
    for record in report["records"]:
        assert record["psnr_masked"] is None and record["psnr"] == 120.0


def test_gaffer_checks_maps_and_strengths_when_the_pipeline_is_built(ctx: Ctx, tmp_path: Path) -> None:
    """Under ns-train the relighting pipeline is built before training: bad maps and options fail there."""
    from relight3d.errors import ConfigError, DataError
    from relight3d.method_configs import gaffer_config

    def build(**options: object) -> None:
        config = gaffer_config(1, 1).pipeline
        config.field_run = ctx.run
        config.target_envmap = exr(tmp_path / "sky.exr", sky())
        for name, value in options.items():
            setattr(config, name, value)
        config.setup(device="cpu", test_mode="val")

    with pytest.raises(ConfigError, match="target-envmap-strength: .*positive"):
        build(target_envmap_strength=-1.0)
    with pytest.raises(ConfigError, match="stage1-steps"):
        build(stage1_steps=-5)
    with pytest.raises(DataError, match="neg.exr: has no light"):
        build(source_envmap=exr(tmp_path / "neg.exr", sky(value=-1.0)))
    build()  # the same with good values builds


def test_envmap_shape_rules(tmp_path: Path) -> None:
    from relight3d.lighting.envmap_io import EnvMapError, read_envmap

    with pytest.warns(UserWarning, match="aspect"):
        assert read_envmap(exr(tmp_path / "near.exr", sky(100, 201))).shape == (100, 201, 3)
    with pytest.raises(EnvMapError, match="is 3x1 pixels .* too small"):
        read_envmap(exr(tmp_path / "tiny.exr", sky(1, 3)))
    assert read_envmap(exr(tmp_path / "ok.exr", sky(2, 4, 1e5))).max() == 1e5
