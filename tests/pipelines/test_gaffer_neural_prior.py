"""The Neural Gaffer path of relight3d-gaffer end to end with a tiny random model: stage 1, stage 2, eval, video."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio

from relight3d.method_configs import gaffer_config
from relight3d.pipelines.relight_run import RelightJob, run_relighting
from relight3d.priors import NeuralGafferPriorConfig
from relight3d.priors.diffusion.components import IMAGE_PARTS
from relight3d.priors.diffusion.testing import tiny_components


def test_neural_gaffer_prior_runs_both_stages(trained_object_run: Path, tiny_object_folder: Path, tmp_path, one_thread):
    model_dir = tiny_components(IMAGE_PARTS, 16).save_pretrained(tmp_path / "ng")
    prior = NeuralGafferPriorConfig(model_path=model_dir, num_inference_steps=2, resolution=16, envmap_height=16)
    job = RelightJob(
        field_run=trained_object_run,
        envmaps=[tiny_object_folder / "envmaps" / "sky.exr"],
        output=tmp_path / "out",
        method=gaffer_config(stage1_steps=3, stage2_steps=2, prior=prior),
        video_frames=2,
    )
    results = run_relighting(job)
    run = tmp_path / "out" / "sky"
    stage1 = next(run.glob("sky/relight3d-gaffer/*/stage1"))
    preds = sorted((stage1 / "pred_image").iterdir())
    assert len(preds) == 16
    # a random model relights to noise-like colours: the cached predictions differ from the inputs
    a = iio.imread(preds[0]).astype(float)
    b = iio.imread(stage1 / "input_image" / preds[0].name).astype(float)
    assert abs(a[..., :3] - b[..., :3]).mean() > 1.0
    assert "relight3d-gaffer (neural-gaffer)/psnr_masked" in results["sky"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["sky"]
    assert iio.imread(run / "rotating_light.mp4", plugin="pyav").shape[0] == 2
