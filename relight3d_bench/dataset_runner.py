"""``relight3d data render``: render a relighting training set with Blender Cycles, in parallel and resumably.

N objects x M environment maps x K rotations of each map x V views, each view as an RGBA image, with the view's
G-buffers and the lights, in the layout ``relight3d train-prior`` reads (:mod:`relight3d.data.relight_pairs`)::

    <out>/manifest.jsonl            one sample per line (relight_pairs' fields, plus "object", "view", "light",
                                    "rotation": the indices of the sample)
    <out>/metadata.jsonl            the same samples for a Hugging Face ``datasets`` "imagefolder" loader
                                    (``load_dataset("imagefolder", data_dir=<out>)``: ``file_name`` is the image)
    <out>/images/<object>/<map>_r<k>_v<view>.png     8-bit sRGB RGBA, straight alpha (Cycles path tracing)
    <out>/gbuffer_frames/<object>/  the views' G-buffers in relight3d's G-buffer clip layout
                                    (:mod:`relight3d.data.gbuffer_frames`: base colour, normal, depth, roughness,
                                    metallic, mask, and each view's camera-to-world)
    <out>/gbuffers/<object>/v<view>.npz   the same G-buffers as float32 arrays (``base_color`` linear, ``normals``
                                    world space, ``depth`` along the ray, ``roughness``, ``metallic``, ``mask``
                                    coverage, ``camera_to_world`` 4x4)
    <out>/envmaps/<map>.exr         each map times its strength, linear float32, world coordinates (Blender's
                                    equirectangular mapping); a sample's map is this turned by
                                    ``envmap_rotation_deg`` about the up axis (a whole number of columns)
    <out>/meta.json                 settings, the plan (materials, cameras, rotations), counts, time; ``complete``

The plan is drawn from the seed before anything is rendered (:func:`relight3d_bench.dataset_config.make_plan`).
Rendering runs in ``--workers`` Blender processes (each with ``--threads`` Cycles threads), each taking every
N-th (object, map) job; a progress bar counts the images on disk. Every file is renamed into place when complete
and existing files are not rendered again, so running the same command again after a crash or a kill continues
where it stopped; a folder made with other settings is refused (``--overwrite`` starts it over).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from relight3d.errors import ConfigError, DataError
from relight3d_bench.cameras import camera_poses
from relight3d_bench.config import resolve_meshes_archive
from relight3d_bench.dataset_config import (
    ARCHIVE_MESHES,
    DATASET_FORMAT_VERSION,
    DatasetRenderConfig,
    check_objects,
    envmap_names,
    gbuffer_name,
    image_name,
    make_plan,
)
from relight3d_bench.runner import bpy_environment, find_bpy_python, run_in_bpy_python

OWN_ENTRIES = ("images", "gbuffers", "gbuffer_frames", "envmaps", "manifest.jsonl", "metadata.jsonl", "meta.json")
"""What this command writes in the output folder (and what ``--overwrite`` removes; nothing else is touched)."""


def _settings(config: DatasetRenderConfig) -> Dict[str, Any]:
    return {"format_version": DATASET_FORMAT_VERSION, **config.to_dict()}


def _check_output(out: Path, config: DatasetRenderConfig, overwrite: bool) -> None:
    """Refuse a folder made with other settings or not by this command, unless ``overwrite`` (then clear it)."""
    meta_path = out / "meta.json"
    if overwrite:
        for name in OWN_ENTRIES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        return
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(meta_path, f"unreadable ({err}); use --overwrite to start over") from None
        if meta.get("settings") != json.loads(json.dumps(_settings(config))):
            raise ConfigError("--output", f"{out} holds a dataset rendered with other settings; use another "
                                          "folder, the same options, or --overwrite")  # fmt: skip
    elif out.is_dir() and any(out.iterdir()):
        raise ConfigError("--output", f"{out} is not empty and holds no relight3d dataset; use another folder")


def _progress_bar(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # nerfstudio installs tqdm; without it there is no bar, only the final line
        return None
    return tqdm(total=total, unit="image", desc="relight3d data render", file=sys.stderr, mininterval=1.0)


def _count_images(out: Path) -> int:
    folder = out / "images"
    return sum(1 for p in folder.rglob("*.png") if not p.name.startswith(".")) if folder.is_dir() else 0


def _run_workers(python: str, plan_file: Path, out: Path, workers: int, threads: int, total: int) -> None:
    """Start the workers, show progress until they all end; a failed worker stops the others.

    Raises:
        RuntimeError: a worker exited with a non-zero code (its output is above).
    """
    bar = _progress_bar(total)
    with bpy_environment() as env:
        procs = [
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "relight3d_bench.render_dataset",
                    "render",
                    "--plan",
                    str(plan_file),
                    "--out",
                    str(out),
                    "--worker",
                    str(k),
                    "--workers",
                    str(workers),
                    "--threads",
                    str(threads),
                ],
                env=env,
            )  # fmt: skip
            for k in range(workers)
        ]
        failed = None
        try:
            while any(p.poll() is None for p in procs):
                if failed is None:
                    failed = next((p for p in procs if p.poll() not in (None, 0)), None)
                    if failed is not None:
                        for p in procs:
                            if p.poll() is None:
                                p.terminate()
                if bar is not None and _count_images(out) != bar.n:
                    bar.n = _count_images(out)
                    bar.refresh()
                time.sleep(0.5)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
            if bar is not None:
                bar.n = _count_images(out)
                bar.close()
    codes = [p.returncode for p in procs]
    if any(codes):
        raise RuntimeError(f"a Blender worker failed (exit codes {codes}); see its output above")


def _write_clips(out: Path, plan: Dict[str, Any]) -> None:
    """Every object's G-buffer clip (``gbuffer_frames/<object>``) from its ``.npz`` files."""
    import torch

    from relight3d.data.gbuffer_frames import GBufferFrame, write_gbuffer_frames

    for entry in plan["objects"]:
        frames = []
        for view in range(len(entry["cameras"])):
            with np.load(out / gbuffer_name(entry["name"], view)) as data:
                t = {k: torch.from_numpy(np.array(data[k])) for k in data.files}
            frames.append(GBufferFrame(
                base_color=t["base_color"], normals=t["normals"], depth=t["depth"], roughness=t["roughness"],
                metallic=t["metallic"], mask=t["mask"], camera_to_world=t["camera_to_world"][:3],
            ))  # fmt: skip
        write_gbuffer_frames(out / "gbuffer_frames", frames, clip_name=entry["name"], overwrite=True)


def _samples(plan: Dict[str, Any], config: DatasetRenderConfig) -> List[Dict[str, Any]]:
    """The manifest's records, in (object, map, rotation, view) order."""
    records = []
    for o, entry in enumerate(plan["objects"]):
        for light in plan["lights"]:
            for k, rotation in enumerate(light["rotations"][o]):
                for v in range(config.views):
                    records.append({
                        "gbuffers": f"gbuffer_frames/{entry['name']}", "frame": v,
                        "image": image_name(entry["name"], light["name"], k, v), "envmap": light["file"],
                        "envmap_rotation_deg": rotation["degrees"],
                        "object": entry["name"], "view": v, "light": light["name"], "rotation": k,
                    })  # fmt: skip
    return records


def render_dataset(
    config: DatasetRenderConfig,
    out: Path,
    workers: int = 1,
    threads: int = 1,
    overwrite: bool = False,
    python: Optional[str] = None,
    meshes_archive: Optional[Path] = None,
) -> Dict[str, Any]:
    """Render (or finish rendering) a relighting dataset into ``out`` (module docstring); returns its ``meta.json``.

    Raises:
        ConfigError: bad settings, an output folder made otherwise, or an archive mesh without the archive.
        DataError: a mesh or map file that is missing.
        BpyNotFoundError: no Python with ``bpy``.
        RuntimeError: a Blender process failed (its output is above).
    """
    if workers < 1 or threads < 1:
        raise ConfigError("--workers/--threads", "must be >= 1")
    out = Path(out).expanduser().resolve()
    check_objects(config)
    needs_archive = any(spec in ARCHIVE_MESHES for spec in config.objects)
    archive = str(resolve_meshes_archive(meshes_archive)) if needs_archive else None
    for _, source, _ in envmap_names(config):
        if Path(source).suffix and not Path(source).expanduser().is_file():
            raise DataError(Path(source), "environment map not found")
    interpreter = find_bpy_python(python)
    _check_output(out, config, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="relight3d_data_") as tmp:
        maps = [{"name": n, "source": s, "strength": k, "file": f"envmaps/{n}.exr"} for n, s, k in envmap_names(config)]
        first = Path(tmp) / "maps.json"
        first.write_text(json.dumps({"lights": maps}))
        run_in_bpy_python(interpreter, ["-m", "relight3d_bench.render_dataset", "prepare", "--plan", first,
                                        "--out", out])  # fmt: skip
        widths = json.loads((out / "envmaps" / "widths.json").read_text())
        plan = make_plan(config, widths, archive)
        for entry in plan["objects"]:
            poses = camera_poses(config.views, entry["camera_seed"], config.camera_distance, config.min_elevation_deg)
            entry["cameras"] = poses.tolist()
        plan["config"] = config.to_dict()
        meta = {"complete": False, "settings": _settings(config), "plan": plan}
        (out / "meta.json").write_text(json.dumps(meta))
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        total = len(plan["objects"]) * len(plan["lights"]) * config.rotations * config.views
        _run_workers(interpreter, plan_file, out, workers, threads, total)
    _write_clips(out, plan)
    records = _samples(plan, config)
    missing = [r["image"] for r in records if not (out / r["image"]).is_file()]
    if missing:
        raise RuntimeError(f"{len(missing)} images are missing after rendering (first: {missing[0]})")
    from relight3d.data.relight_pairs import write_manifest

    write_manifest(out, records)
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"file_name": r.pop("image"), **r}) + "\n" for r in [dict(x) for x in records])
    meta.update(
        complete=True, samples=len(records), objects=len(plan["objects"]), maps=len(plan["lights"]),
        rotations=config.rotations, views=config.views, seconds_this_run=round(time.perf_counter() - start, 1),
        workers=workers, threads=threads, layout="see relight3d_bench/dataset_runner.py",
    )  # fmt: skip
    tmp_meta = out / ".meta.json.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, out / "meta.json")
    return meta


__all__ = ["OWN_ENTRIES", "render_dataset"]
