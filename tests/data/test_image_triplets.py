"""``relight3d data from-images``: layout, light descriptions, Retinex and shape closed forms, the optional
segmentation and CLIP models (tiny random ones), resumption and one-line errors."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

from relight3d.errors import ConfigError, DataError, Relight3dError, WeightsError
from relight3d.pipelines.image_degradation import (
    DirectionalLight,
    EnvironmentLight,
    describe_light,
    render_relit,
    screen_space_shadow,
)
from relight3d.pipelines.image_files import load_envmaps
from relight3d.pipelines.image_intrinsics import (
    inflated_height,
    luminance,
    normals_from_height,
    retinex_albedo,
)
from relight3d.pipelines.image_triplets import FromImagesConfig, read_triplets, run_from_images
from relight3d.pipelines.image_triplets_cli import register_from_images

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 48
TEMPLATE = "relight it with {lighting}"


def _sphere_photo(width: int, height: int, discs: List[tuple], colours: tuple, rgb_only: bool = False) -> np.ndarray:
    """8-bit RGBA (or RGB) photo of shaded balls with a checker albedo and soft (anti-aliased) alpha edges."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    rgb = np.ones((height, width, 3))
    alpha = np.zeros((height, width))
    for cx, cy, r in discs:
        x, y = (xx - cx) / r, -(yy - cy) / r
        rr = x * x + y * y
        z = np.sqrt(np.clip(1 - rr, 0, None))
        shade = np.clip(0.25 + 0.75 * (-0.4 * x + 0.5 * y + 0.75 * z), 0.05, 1)
        checker = ((xx // 6 + yy // 6) % 2)[..., None] > 0
        albedo = np.where(checker, colours[0], colours[1])
        cover = np.clip((1 - np.sqrt(rr)) * r + 0.5, 0, 1)
        inside = cover > alpha
        rgb = np.where(inside[..., None], (albedo * shade[..., None]) ** (1 / 2.2), rgb)
        alpha = np.maximum(alpha, cover)
    if rgb_only:
        return (rgb * alpha[..., None] + (1 - alpha[..., None]) * 255 + 0.5).astype(np.uint8)  # on white
    return (np.dstack([rgb, alpha]) * 255 + 0.5).astype(np.uint8)


def _write_photos(folder: Path) -> Dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    photos = {
        "ball.png": _sphere_photo(SIZE, SIZE, [(24, 24, 18)], ([0.8, 0.5, 0.3], [0.3, 0.6, 0.8])),
        "small_ball.png": _sphere_photo(SIZE, SIZE, [(20, 28, 12)], ([0.9, 0.9, 0.9], [0.2, 0.2, 0.2])),
        "two_balls.png": _sphere_photo(SIZE, SIZE, [(16, 30, 11), (32, 18, 13)], ([0.7, 0.2, 0.2], [0.9, 0.8, 0.4])),
        "wide.png": _sphere_photo(SIZE, 36, [(24, 18, 15)], ([0.4, 0.7, 0.4], [0.6, 0.6, 0.9])),
    }
    for name, array in photos.items():
        Image.fromarray(array).save(folder / name)
    return photos


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("from_images")
    photos = _write_photos(root / "photos")
    config = FromImagesConfig(root / "photos", root / "out", variants=3, seed=3, resolution=SIZE)
    return root, photos, run_from_images(config)


def _cli(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="relight3d data")
    register_from_images(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["from-images", *argv])
    return args.func(args)


def _light_of(record: dict):
    light = dict(record["light"])
    if light.pop("kind") == "directional":
        return DirectionalLight(**{k: tuple(v) if isinstance(v, list) else v for k, v in light.items()})
    light.pop("camera_to_world")
    return EnvironmentLight(**light)


# --- layout -------------------------------------------------------------------------------------------------------


def test_layout_files_sizes_and_masks_equal_alpha(first_run):
    root, photos, summary = first_run
    out = root / "out"
    records = read_triplets(out)
    assert summary["status"] == "complete" and summary["photos"] == summary["kept"] == 4
    assert summary["triplets"] == len(records) == 12 and summary["filtered"] == [] and summary["skipped"] == {}
    raw = [json.loads(line) for line in (out / "triplets.jsonl").read_text().splitlines()]
    assert [r["id"] for r in raw] == [f"{Path(n).stem}_{k}" for n in sorted(photos) for k in range(3)]
    for r in raw:
        stem = Path(r["source"]).stem
        assert (r["input"], r["target"]) == (f"inputs/{r['id']}.png", f"targets/{r['id']}.png")
        assert (r["mask"], r["albedo"]) == (f"masks/{stem}.png", f"albedo/{stem}.png")
        assert r["light"]["kind"] in ("environment", "directional") and r["instruction"].startswith("relight it with ")
    for name, array in photos.items():
        mask = np.asarray(Image.open(out / "masks" / f"{Path(name).stem}.png"))
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        top = (SIZE - array.shape[0]) // 2  # the wide photo is padded to a square with mask 0
        assert np.array_equal(mask[top : top + array.shape[0]], array[..., 3])
        assert mask[:top].sum() == 0 and mask[top + array.shape[0] :].sum() == 0
        photo = array[..., :3] / 255.0 * (array[..., 3:] / 255.0) + (1 - array[..., 3:] / 255.0)
        for k in range(3):
            for folder in ("inputs", "targets"):
                image = Image.open(out / folder / f"{Path(name).stem}_{k}.png")
                assert image.mode == "RGB" and image.size == (SIZE, SIZE)
            shown = np.asarray(Image.open(out / "inputs" / f"{Path(name).stem}_{k}.png")) / 255.0
            assert np.abs(shown[top : top + array.shape[0]] - photo).max() <= 1.0 / 255 + 1e-6  # the photo on white
            target = np.asarray(Image.open(out / "targets" / f"{Path(name).stem}_{k}.png"))
            assert (target[mask == 0] == 255).all() and np.abs(target / 255.0 - shown).max() > 0.1  # relit inside
        albedo = np.asarray(Image.open(out / "albedo" / f"{Path(name).stem}.png"))
        assert albedo.shape == (SIZE, SIZE, 3) and albedo[mask == 0].max() == 0


def test_instructions_describe_the_recorded_lights_and_runs_repeat(first_run, tmp_path):
    root, _, _ = first_run
    envmaps = load_envmaps(None, needed=True)
    records = read_triplets(root / "out")
    assert {r["light"]["kind"] for r in records} == {"environment", "directional"}
    for r in records:
        assert r["instruction"] == TEMPLATE.format(lighting=describe_light(_light_of(r), envmaps))
    again = FromImagesConfig(root / "photos", tmp_path / "again", variants=3, seed=3, resolution=SIZE)
    run_from_images(again)
    assert (tmp_path / "again" / "triplets.jsonl").read_bytes() == (root / "out" / "triplets.jsonl").read_bytes()
    assert (tmp_path / "again/targets/ball_2.png").read_bytes() == (root / "out/targets/ball_2.png").read_bytes()


def test_directional_light_from_the_upper_left_is_named_and_lights_the_upper_left():
    light = DirectionalLight((-0.6, 0.6, 0.53), (1.0, 0.9, 0.75), ambient=0.05, specular=0.2, shininess=32.0)
    assert describe_light(light, {}) == "hard warm light from the upper left"
    assert "lower right" in describe_light(DirectionalLight((0.6, -0.6, 0.53), (1, 1, 1), 0.05, 0.2, 32.0), {})
    yy, xx = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    mask = ((xx - 24) ** 2 + (yy - 24) ** 2 <= 18**2).float()
    height = inflated_height(mask)
    relit = luminance(render_relit(torch.full((SIZE, SIZE, 3), 0.6), normals_from_height(height), height, light, {}))
    upper_left, lower_right = relit[12:20, 12:20].mean(), relit[28:36, 28:36].mean()
    assert float(upper_left) > 2.0 * float(lower_right)


def test_every_directional_instruction_matches_its_direction(tmp_path):
    _write_photos(tmp_path / "photos")
    run_from_images(FromImagesConfig(tmp_path / "photos", tmp_path / "out", variants=6, resolution=32,
                                     directional_fraction=1.0))  # fmt: skip
    records = read_triplets(tmp_path / "out")
    assert len(records) == 24 and all(r["light"]["kind"] == "directional" for r in records)
    for r in records:
        x, y, z = r["light"]["direction"]
        text = r["instruction"]
        assert text.startswith("relight it with hard ")
        assert ("left" in text) == (x < -0.38 and z <= 0.8) and ("right" in text) == (x > 0.38 and z <= 0.8)
        assert ("upper" in text or "above" in text) == (y > 0.38 and z <= 0.8)


# --- closed forms ------------------------------------------------------------------------------------------------


def _ball(size: int = 64, radius: float = 26.0):
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    x, y = (xx - size / 2) / radius, -(yy - size / 2) / radius
    rr = x * x + y * y
    normals = torch.stack([x, y, torch.sqrt((1 - rr).clamp_min(0))], dim=-1)
    return xx, yy, (rr <= 1).float(), normals


def test_retinex_recovers_albedo_under_smooth_shading():
    xx, yy, mask, normals = _ball()
    light = torch.nn.functional.normalize(torch.tensor([-1.0, 1.0, 1.0]), dim=0)
    shading = (0.1 + 0.9 * (0.5 + 0.5 * (normals @ light))) ** 2  # smooth, from 0.01 to 1
    checker = ((xx // 6 + yy // 6) % 2)[..., None] > 0
    albedo = torch.where(checker, torch.tensor([0.8, 0.6, 0.3]), torch.tensor([0.2, 0.3, 0.5]))
    image = albedo * shading[..., None]
    inside = mask > 0.5

    def log_error(estimate):  # spread of log(estimate / truth): 0 for the truth times any global scale
        return float((torch.log(luminance(estimate).clamp_min(1e-4)) - torch.log(luminance(albedo)))[inside].std())

    recovered = retinex_albedo(image, mask)
    assert log_error(image) > 0.6 and log_error(recovered) < 0.2  # measured: 0.63 and 0.15
    chroma = recovered / luminance(recovered).clamp_min(1e-6)[..., None]
    true_chroma = albedo / luminance(albedo)[..., None]
    unclipped = inside & (recovered.amax(-1) < 0.999)
    assert float(unclipped.sum() / inside.sum()) > 0.7  # (the brightest pixels clip at 1)
    assert float((chroma - true_chroma)[unclipped].abs().max()) < 1e-3  # white shading keeps the chroma

    flat = retinex_albedo(torch.full((64, 64, 3), 0.5) * shading[..., None], mask)
    spread = luminance(flat)[inside]
    assert float(shading[inside].std() / shading[inside].mean()) > 0.45
    assert float(spread.std() / spread.mean()) < 0.13  # measured: 0.10


def test_inflated_disc_is_a_hemisphere():
    _, _, mask, normals = _ball(64, 24.0)
    height = inflated_height(mask)
    estimate = normals_from_height(height)
    rr = normals[..., 0] ** 2 + normals[..., 1] ** 2
    inner = rr < 0.9**2
    angle = torch.rad2deg(torch.arccos((estimate * normals).sum(-1).clamp(-1, 1)))[inner]
    assert float(angle.mean()) < 2.5 and float(angle.max()) < 8.0  # measured: 2.0 and 6.8 degrees
    assert abs(float(height.max()) - 24.0) < 1.5


def test_screen_space_shadow_falls_away_from_the_light():
    field = torch.zeros(16, 32)
    field[4:12, 14:18] = 12.0  # a block in the middle
    from_left = screen_space_shadow(field, (-0.9, 0.0, 0.3))
    assert from_left[8, 20:26].sum() == 0 and from_left[8, 2:12].min() == 1  # shadow to the right of the block
    from_right = screen_space_shadow(field, (0.9, 0.0, 0.3))
    assert from_right[8, 6:12].sum() == 0 and from_right[8, 20:30].min() == 1
    from_top = screen_space_shadow(field, (0.0, 0.9, 0.3))
    assert from_top[14, 14:18].sum() == 0 and from_top[1, 14:18].min() == 1  # image rows grow downwards
    assert screen_space_shadow(field, (0.0, 0.0, 1.0)).min() == 1  # a frontal light casts no shadow


# --- optional models ---------------------------------------------------------------------------------------------


def _tiny_segformer(folder: Path) -> Path:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    config = SegformerConfig(num_encoder_blocks=1, depths=[1], sr_ratios=[1], hidden_sizes=[8], patch_sizes=[3],
                             strides=[2], num_attention_heads=[1], mlp_ratios=[1], decoder_hidden_size=8, num_labels=3,
                             id2label={0: "background", 1: "object", 2: "shadow"})  # fmt: skip
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_segmentation_model_masks_photos_without_alpha(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, discs in (("a.jpg", [(24, 24, 18)]), ("b.png", [(20, 28, 12)])):
        Image.fromarray(_sphere_photo(SIZE, SIZE, discs, ([0.8, 0.5, 0.3], [0.3, 0.6, 0.8]), rgb_only=True)).save(
            photos / name
        )
    model = _tiny_segformer(tmp_path / "segformer")
    base = ["--input", str(photos), "--variants", "1", "--resolution", str(SIZE), "--segmentation-model", str(model)]
    assert _cli([*base, "--output", str(tmp_path / "out")]) == 0  # random labels: the plumbing, not the quality
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    written = sorted((tmp_path / "out" / "masks").iterdir())
    assert summary["kept"] == len(written) >= 1 and summary["kept"] + len(summary["skipped"]) == 2
    for path in written:  # an empty mask would be skipped, with its reason in the summary
        mask = np.asarray(Image.open(path))
        assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
    _cli([*base, "--output", str(tmp_path / "all"), "--foreground-labels", "background", "1", "shadow"])
    for name in ("a", "b"):  # every label is foreground: the whole photo
        assert (np.asarray(Image.open(tmp_path / "all" / "masks" / f"{name}.png")) == 255).all()
    assert len(read_triplets(tmp_path / "all")) == 2
    with pytest.raises(ConfigError, match="--foreground-labels: the model has no label 'sky'"):
        _cli([*base, "--output", str(tmp_path / "sky"), "--foreground-labels", "sky"])


def _tiny_clip(folder: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from relight3d.priors.diffusion.testing import clip_image_encoder, clip_text_encoder, tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    text, vision = clip_text_encoder(len(tokenizer)).config, clip_image_encoder().config
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32)
    CLIPModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_clip_filter_keeps_all_or_none_and_writes_scores(tmp_path):
    _write_photos(tmp_path / "photos")
    model = _tiny_clip(tmp_path / "clip")
    common = dict(variants=1, resolution=32, clip_model=model)
    keep = run_from_images(FromImagesConfig(tmp_path / "photos", tmp_path / "keep", clip_threshold=0.0, **common))
    scores = keep["clip_scores"]
    assert sorted(scores) == ["ball.png", "small_ball.png", "two_balls.png", "wide.png"]
    assert all(0.0 < s < 1.0 for s in scores.values()) and len(set(scores.values())) > 1  # the prompts differ
    assert keep["kept"] == 4 and keep["filtered"] == [] and len(read_triplets(tmp_path / "keep")) == 4
    none = run_from_images(FromImagesConfig(tmp_path / "photos", tmp_path / "none", clip_threshold=1.0, **common))
    assert none["kept"] == 0 and sorted(none["filtered"]) == sorted(scores) and none["clip_scores"] == scores
    assert (tmp_path / "none" / "triplets.jsonl").read_text() == "" and not list((tmp_path / "none/targets").iterdir())
    middle = sorted(scores.values())[1] + 1e-9  # drops exactly the lowest two
    some = run_from_images(FromImagesConfig(tmp_path / "photos", tmp_path / "some", clip_threshold=middle, **common))
    assert some["kept"] == 2 and {r["source"] for r in read_triplets(tmp_path / "some")} == {
        name for name, s in scores.items() if s >= middle
    }


# --- resumption, overwrite and one-line errors ----------------------------------------------------------------------


def test_output_in_use_is_refused_then_overwritten_or_resumed(first_run, tmp_path, capsys):
    root, _, _ = first_run
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    argv = ["--input", str(root / "photos"), "--output", str(out), "--variants", "3", "--seed", "3"]
    argv += ["--resolution", str(SIZE)]
    with pytest.raises(ConfigError) as err:
        _cli(argv)
    assert "\n" not in str(err.value) and str(err.value).startswith("--output: ") and "--overwrite" in str(err.value)
    complete = (root / "out" / "triplets.jsonl").read_text()
    lines = complete.splitlines()
    (out / "targets" / "wide_2.png").unlink()
    (out / "triplets.jsonl").write_text("\n".join(lines[:-4]) + "\n" + lines[-4][:30])  # cut off mid-photo
    assert _cli([*argv, "--resume"]) == 0
    assert (out / "triplets.jsonl").read_text() == complete and (out / "targets" / "wide_2.png").is_file()
    assert capsys.readouterr().out.strip().count("\n") == 0  # one summary line
    with pytest.raises(ConfigError, match="--resume: .* other settings"):
        _cli([*argv[:-1], "16", "--resume"])
    (out / "stray.txt").write_text("kept")
    assert _cli([*argv, "--overwrite", "--variants", "1"]) == 0
    assert len(read_triplets(out)) == 4 and not (out / "targets" / "ball_2.png").exists()
    assert (out / "stray.txt").read_text() == "kept"  # only the earlier run's own files are deleted


def test_bad_inputs_are_one_line_errors(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_sphere_photo(32, 32, [(16, 16, 12)], ([0.5] * 3, [0.7] * 3), rgb_only=True)).save(photos / "a.png")
    base = ["--input", str(photos), "--variants", "1", "--resolution", "32"]
    with pytest.raises(DataError) as err:  # no alpha, no segmentation model
        _cli([*base, "--output", str(tmp_path / "o1")])
    assert "\n" not in str(err.value) and str(err.value).startswith(str(photos / "a.png")) and "alpha" in str(err.value)
    with pytest.raises(DataError, match=r"a.png: has no alpha channel .*\(--mask-source alpha\)"):
        _cli([*base, "--output", str(tmp_path / "o1b"), "--mask-source", "alpha"])

    (tmp_path / "empty_model").mkdir()
    with pytest.raises(WeightsError) as err:  # a model folder that holds no model
        _cli([*base, "--output", str(tmp_path / "o1c"), "--segmentation-model", str(tmp_path / "empty_model")])
    assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path / "empty_model"))

    (photos / "a.png").unlink()
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError) as err:
        _cli([*base, "--output", str(tmp_path / "o2")])
    assert "\n" not in str(err.value) and str(err.value).startswith(str(photos / "broken.png"))

    with pytest.raises(DataError, match="no such folder"):
        _cli(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o3")])
    with pytest.raises(ConfigError, match="--mask-source: segmentation needs --segmentation-model"):
        _cli([*base, "--output", str(tmp_path / "o4"), "--mask-source", "segmentation"])
    with pytest.raises(ConfigError, match="--output: is the input folder"):
        _cli([*base, "--output", str(photos), "--overwrite"])
    for error in (DataError, ConfigError):
        assert issubclass(error, Relight3dError)


def test_read_triplets_refuses_bad_lines_escaping_paths_and_missing_files(first_run, tmp_path):
    root, _, _ = first_run
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    good = (out / "triplets.jsonl").read_text().splitlines()
    record = json.loads(good[0])

    def check(line: str, message: str) -> None:
        (out / "triplets.jsonl").write_text(good[1] + "\n" + line + "\n")
        with pytest.raises(DataError, match=message) as err:
            read_triplets(out)
        assert "\n" not in str(err.value)

    check("{not json", "line 2: not JSON")
    check("[1, 2]", "line 2: expected a JSON object")
    check(json.dumps({**record, "target": "../../etc/passwd"}), "line 2: target: '../../etc/passwd' leaves")
    check(
        json.dumps({**record, "input": str(out / "inputs" / "ball_0.png")}), "line 2: input: expected a relative path"
    )
    check(json.dumps({**record, "mask": "masks/nothing.png"}), "line 2: mask: 'masks/nothing.png' does not exist")
    check(json.dumps({**record, "light": {"kind": "sun"}}), "line 2: light must be")
    check(json.dumps({**record, "instruction": ""}), "line 2: instruction must be a non-empty string")
    (out / "triplets.jsonl").unlink()
    with pytest.raises(DataError, match="no such file"):
        read_triplets(out)


def test_environment_light_record_and_envmap_turn():
    envmaps = load_envmaps(None, needed=True)
    light = EnvironmentLight("sunrise.exr", 180.0, 0.5)
    record = light.to_record()
    assert record["kind"] == "environment" and len(record["camera_to_world"]) == 3
    # turning the map half way round moves its low sun from one side of the object to the other
    assert "from the right" in describe_light(EnvironmentLight("sunrise.exr", 0.0, 0.5), envmaps)
    assert "from the left" in describe_light(light, envmaps)
    assert math.isclose(record["rotation_deg"], 180.0)
