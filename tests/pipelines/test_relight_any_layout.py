"""``relight3d relight`` on Blender-layout ground truth (``--eval-data`` and the benchmark layout), with the source
light recorded, given or estimated, and output names that cannot leave ``--output``."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from relight3d.cli import main
from relight3d.output_names import OutputNames, safe_name

RELIT = "relight3d-gaffer (physical)"
BASELINE = "no relighting"


@pytest.fixture(scope="module")
def relight_scene(tmp_path_factory: pytest.TempPathFactory):
    """A 24 px scene under the shipped 'courtyard' map (12 training, 3 test views) and its test views under
    'sunrise' and 'studio', rendered by relight3d's tracer."""
    from relight3d.data.synthetic import SceneSpec, write_relighting_scene
    from relight3d.demo import shipped_envmaps

    maps = shipped_envmaps()
    spec = SceneSpec(resolution=24, n_train=12, n_test=3, supersample=1, light_height=8)
    out = tmp_path_factory.mktemp("relight_scene")
    return write_relighting_scene(out, spec, maps["courtyard"], [maps["sunrise"], maps["studio"]])


@pytest.fixture(scope="module")
def scene_field(relight_scene, tmp_path_factory: pytest.TempPathFactory, shrink_config) -> Path:
    """config.yml of relight3d-tensorf trained briefly on the scene's source-light views."""
    from relight3d.engine.run import train
    from relight3d.method_configs import tensorf_config

    cfg = shrink_config(tensorf_config(120), 120)
    cfg.pipeline.datamanager.train_num_rays_per_batch = 512
    trainer = train(cfg, relight_scene.scene, tmp_path_factory.mktemp("scene_field"), experiment_name="scene")
    return trainer.base_dir / "config.yml"


@pytest.fixture(autouse=True)
def cheap_physical_prior(monkeypatch) -> None:
    """The physical prior with coarse shadows (32 directions, a 16^3 density grid): tracing the default 288
    directions through a 64^3 grid costs tens of seconds per run on a CPU, the same for any image size."""
    from relight3d.priors import registry
    from relight3d.priors.physical import PhysicalPriorConfig

    def prior_config(name: str, model_path):  # noqa: ANN001, ANN202
        assert name == "physical" and model_path is None
        return PhysicalPriorConfig(shadow_directions_height=4, shadow_volume_resolution=16)

    monkeypatch.setattr(registry, "prior_config", prior_config)


def _relight(field: Path, out: Path, *extra: str) -> int:
    return main(
        ["relight", "--field-run", str(field), "--output", str(out), "--stage1-steps", "4", "--stage2-steps", "0",
         "--video-frames", "0", *extra]
    )  # fmt: skip


def _check_scored(entry: dict) -> None:
    for method in (RELIT, BASELINE):
        for key in ("psnr_masked", "psnr_masked_aligned", "psnr", "psnr_aligned"):
            assert math.isfinite(entry[f"{method}/{key}"]) and 5.0 < entry[f"{method}/{key}"] < 60.0


def test_eval_data_scores_a_blender_layout_folder(relight_scene, scene_field: Path, tmp_path: Path) -> None:
    sunrise_map, sunrise_eval = relight_scene.targets["sunrise"]
    out = tmp_path / "relit"
    assert _relight(scene_field, out, "--envmap", str(sunrise_map), "--eval-data", str(sunrise_eval)) == 0
    run = out / "sunrise"
    names = ["000.png", "001.png", "002.png"]
    for folder in ("pred", "gt", "baseline"):
        assert sorted(p.name for p in (run / folder).iterdir()) == names
    # The ground truth is the eval folder's, the baseline the scene's test views under the training light.
    assert (run / "gt" / "001.png").read_bytes() == (sunrise_eval / "test" / "r_001.png").read_bytes()
    assert (run / "baseline" / "001.png").read_bytes() == (relight_scene.scene / "test" / "r_001.png").read_bytes()
    entry = json.loads((out / "summary.json").read_text())["sunrise"]
    _check_scored(entry)
    assert "transforms_test.json" in entry["ground_truth"] and "data's images" in entry["baseline"]
    assert entry["source_light"].startswith("recorded by the data") and "courtyard.exr" in entry["source_light"]
    assert (out / "report" / "report.html").is_file()


def test_benchmark_layout_is_found_without_eval_data(relight_scene, scene_field: Path, tmp_path: Path) -> None:
    """The Cycles benchmark's Blender layout: meta.json names the lights, transforms_test_light{k}.json holds light
    k's test views. The field renders the baseline when the data has no test views of its own."""
    data = tmp_path / "bench_object"
    shutil.copytree(relight_scene.scene, data)
    (data / "transforms_test.json").unlink()
    studio_map, studio_eval = relight_scene.targets["studio"]
    shutil.copytree(studio_eval / "test", data / "test_light1")
    meta = json.loads((studio_eval / "transforms_test.json").read_text())
    for frame in meta["frames"]:
        frame["file_path"] = frame["file_path"].replace("./test/", "./test_light1/")
    (data / "transforms_test_light1.json").write_text(json.dumps(meta))
    lights = json.loads((data / "meta.json").read_text())["lights"] + [{"name": "studio", "file": "x.exr"}]
    (data / "meta.json").write_text(json.dumps({"lights": lights}))
    out = tmp_path / "relit"
    assert _relight(scene_field, out, "--envmap", str(studio_map), "--data", str(data)) == 0
    entry = json.loads((out / "summary.json").read_text())["studio"]
    _check_scored(entry)
    assert "transforms_test_light1.json" in entry["ground_truth"] and "field's render" in entry["baseline"]
    assert len(list((out / "studio" / "baseline").glob("*.png"))) == 3


def test_estimated_source_light(relight_scene, scene_field: Path, tmp_path: Path) -> None:
    sunrise_map, sunrise_eval = relight_scene.targets["sunrise"]
    out = tmp_path / "relit"
    code = _relight(
        scene_field, out, "--envmap", str(sunrise_map), "--eval-data", str(sunrise_eval), "--estimate-source"
    )
    assert code == 0
    entry = json.loads((out / "summary.json").read_text())["sunrise"]
    _check_scored(entry)
    assert entry["source_light"].startswith("estimated from the field")
    estimated = Path(entry["source_light"].rsplit(": ", 1)[1])
    assert estimated.is_file() and out in estimated.parents


def test_given_source_envmap_is_used(relight_scene, scene_field: Path, tmp_path: Path) -> None:
    sunrise_map, sunrise_eval = relight_scene.targets["sunrise"]
    out = tmp_path / "relit"
    code = _relight(
        scene_field, out, "--envmap", str(sunrise_map), "--eval-data", str(sunrise_eval),
        "--source-envmap", str(relight_scene.source_envmap),
    )  # fmt: skip
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["sunrise"]["source_light"].startswith("given:")


@pytest.mark.parametrize(
    "extra, option",
    [
        (
            lambda s: [
                "--envmap",
                str(s.targets["sunrise"][0]),
                str(s.targets["studio"][0]),
                "--eval-data",
                str(s.targets["sunrise"][1]),
            ],
            "--eval-data",
        ),  # fmt: skip
        (
            lambda s: ["--envmap", str(s.targets["sunrise"][0]), "--eval-data", str(s.scene / "train")],
            "transforms_test.json",
        ),  # fmt: skip
        (
            lambda s: [
                "--envmap",
                str(s.targets["sunrise"][0]),
                "--source-envmap",
                str(s.source_envmap),
                "--estimate-source",
            ],
            "--estimate-source",
        ),  # fmt: skip
    ],
    ids=["count-mismatch", "not-a-blender-folder", "given-and-estimated"],
)
def test_bad_eval_and_source_options_are_one_line_errors(
    relight_scene, scene_field: Path, tmp_path: Path, capsys, extra, option
) -> None:
    out = tmp_path / "relit"
    assert _relight(scene_field, out, *extra(relight_scene)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("relight3d: error:") and option in err
    assert not list(out.glob("*/**/config.yml")), "nothing may be trained before the options are checked"


def test_output_names_derived_from_env_maps_stay_inside_output(relight_scene, scene_field: Path, tmp_path) -> None:
    """A map named '...exr' has the stem '..': the run folder once became '<output>/..'."""
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    hostile = root / "...exr"
    shutil.copy(relight_scene.targets["sunrise"][0], hostile)
    out = root / "a" / "b" / "out"
    assert _relight(scene_field, out, "--envmap", str(hostile)) == 0
    assert sorted(p.name for p in root.iterdir()) == ["...exr", "a"]
    assert [p.name for p in (root / "a").iterdir()] == ["b"]
    assert [p.name for p in (root / "a" / "b").iterdir()] == ["out"]
    assert (out / "envmap" / "pred").is_dir()
    assert list(json.loads((out / "summary.json").read_text())) == ["envmap"]


HOSTILE_NAMES = ["..", ".", "", "../../etc/passwd", "a/b", "a\\b", "/abs", ".hidden", "x\x00y", "名前", "-rf", " "]


@pytest.mark.parametrize("text", HOSTILE_NAMES)
def test_safe_name_is_one_safe_component(text: str, tmp_path: Path) -> None:
    name = safe_name(text)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name), name
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_output_names_are_unique_and_stable() -> None:
    names = OutputNames()
    got = [names.add(t, key=str(i)) for i, t in enumerate(["sky", "Sky", "sky", "..", "a/b", "a_b"])]
    assert got == ["sky", "Sky-2", "sky-3", "unnamed", "a_b", "a_b-2"]
    assert names.add("whatever", key="0") == "sky"
    assert safe_name("sunrise_1k") == "sunrise_1k"


def test_recorded_source_map_must_stay_inside_the_data_folder(relight_scene, scene_field, tmp_path, capsys) -> None:
    """meta.json's lights[0].file is read like a dataset file_path: it may not point outside the data folder."""
    data = tmp_path / "data"
    shutil.copytree(relight_scene.scene, data)
    outside = tmp_path / "outside.exr"
    shutil.copy(relight_scene.source_envmap, outside)
    (data / "meta.json").write_text(json.dumps({"lights": [{"name": "courtyard", "file": "../outside.exr"}]}))
    sunrise_map, sunrise_eval = relight_scene.targets["sunrise"]
    out = tmp_path / "relit"
    extra = ["--envmap", str(sunrise_map), "--eval-data", str(sunrise_eval), "--data", str(data)]
    code = _relight(scene_field, out, *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "meta.json" in err[0] and "outside the dataset folder" in err[0]
