"""``relight3d export mesh`` / ``video`` / ``gbuffers``: thin wrappers over :mod:`relight3d.export` and
:mod:`relight3d.pipelines.gbuffer_export`.

Imports stay cheap at module level (``relight3d`` imports every subcommand module on start); torch, nerfstudio,
trimesh and friends are imported inside the command functions. Options named like the fields of
:class:`~relight3d.export.mesh.MeshExportConfig` / :class:`~relight3d.export.video.VideoExportConfig` fill them
(:func:`~relight3d.cli_types.config_from_args`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Tuple, Union

from relight3d.cli_types import (
    add_command,
    add_device_argument,
    config_from_args,
    finite_float,
    float_in_open_range,
    int_in_range,
    non_negative_int,
    positive_float,
    positive_int,
    resolve_device,
    unit_interval_float,
)

RENDER_OUTPUT_NAMES = ("rgb", "depth", "normals", "accumulation")


def _threshold(text: str) -> Union[float, str]:
    if text in ("auto", "masks", "opacity"):
        return text
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"expected auto, masks, opacity or a positive number, got {text}") from err


def _outputs(text: str) -> Tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in RENDER_OUTPUT_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown render output(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(RENDER_OUTPUT_NAMES)}"
        )
    return names


def _load(args: argparse.Namespace) -> Tuple[Any, Any]:
    from relight3d.engine.loading import load_trained_pipeline

    return load_trained_pipeline(args.load_config, device=resolve_device(args.device), data=args.data)


def _export_mesh(args: argparse.Namespace) -> int:
    from relight3d.export.mesh import MeshExportConfig, check_mesh_output, write_mesh

    output = check_mesh_output(args.output, textured=bool(args.texture_size))  # fail fast, before loading
    config = config_from_args(MeshExportConfig, args)
    _, pipeline = _load(args)
    exporter = config.setup()
    mesh = exporter.extract(pipeline.model, source=args.load_config, silhouettes=exporter.silhouettes_for(pipeline))
    write_mesh(mesh, output)
    info = mesh.metadata["relight3d"]
    print(
        f"wrote {output}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces; density threshold "
        f"{info['threshold']:.4g} ({info['threshold_mode']}), grid {'x'.join(map(str, info['grid_shape']))}, "
        f"{info['components_found']} component(s) found; {info['seconds_total']:.1f} s"
    )
    return 0


def _export_video(args: argparse.Namespace) -> int:
    from relight3d.export.camera_paths import camera_path_for, write_camera_path_json
    from relight3d.export.output_paths import check_output_path
    from relight3d.export.video import VIDEO_SUFFIXES, VideoExportConfig

    check_output_path(args.output, VIDEO_SUFFIXES, "video")  # fail fast, before loading
    _, pipeline = _load(args)
    cameras, file_fps = camera_path_for(
        pipeline, args.path, args.frames, args.width, args.height, args.radius, args.elevation, args.fov
    )
    fps = args.fps or file_fps or 24.0
    if args.save_camera_path:
        write_camera_path_json(cameras, args.save_camera_path, fps)
    config = config_from_args(VideoExportConfig, args, fps=fps)
    summary = config.setup().render(pipeline.model, cameras, args.output)
    print(f"wrote {summary.path}: {summary.n_frames} frames of {summary.width}x{summary.height} at {summary.fps:g} fps")
    return 0


def _export_gbuffers(args: argparse.Namespace) -> int:
    from relight3d.pipelines.gbuffer_export import export_gbuffers

    result = export_gbuffers(
        args.field_run, args.output, args.views, args.frames, resolve_device(args.device), args.data,
        args.material_source, args.material_gbuffers, args.image_format, args.overwrite,
    )  # fmt: skip
    print(f"wrote {result.clip}: {result.frames} frames of {result.width}x{result.height} G-buffers "
          f"(basecolor, normal, depth, roughness, metallic); material {result.material}")  # fmt: skip
    return 0


def _gbuffer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--field-run", required=True, type=Path, help="config.yml of a trained relight3d-tensorf / -ngp run")
    p.add_argument("--output", required=True, type=Path,
                   help="the gbuffer_frames folder; the clip is written in <output>/<views>/")  # fmt: skip
    p.add_argument("--views", choices=["train", "test", "orbit"], default="train",
                   help="the training views, the held-out views, or an orbit around the object")  # fmt: skip
    p.add_argument("--frames", type=positive_int, default=24, help="frames of the orbit")
    p.add_argument(
        "--material-source", choices=["physical", "gbuffer-frames"], default="physical",
        help="what the field's material head is fitted to when its checkpoint has none: the physical prior's albedo "
        "estimate, or DiffusionRenderer inverse-renderer frames (--material-gbuffers)",
    )  # fmt: skip
    p.add_argument(
        "--material-gbuffers", type=Path, default=None,
        help="the clip folder of inverse-renderer frames of the training views, in the data's order",
    )  # fmt: skip
    p.add_argument("--image-format", choices=["png", "jpg"], default="png", help="png (lossless) or jpg (quality 85)")
    p.add_argument("--overwrite", action="store_true", help="replace a clip written before")
    p.add_argument("--data", type=Path, default=None, help="the training data folder, if it has moved")
    add_device_argument(p, "device to render on")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--load-config", required=True, type=Path, help="config.yml of a trained relight3d run")
    parser.add_argument("--output", required=True, type=Path, help="file to write (format from the extension)")
    add_device_argument(parser, "device to load the field on")
    parser.add_argument("--data", type=Path, default=None, help="the training data folder, if it has moved")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def register(subparsers: Any) -> None:
    """Add ``export`` with ``mesh``, ``video`` and ``gbuffers`` to the ``relight3d`` command."""
    export = add_command(subparsers, "export", help="export a trained field as a mesh, a video or G-buffers")
    sub = export.add_subparsers(dest="export_command", required=True)

    mesh = add_command(sub, "mesh", help="marching-cubes mesh (.ply, .obj, .glb) with vertex colours or a texture")
    _common(mesh)
    mesh.add_argument("--resolution", type=int_in_range(8, 4096), default=256,
                      help="grid samples along the longest side")  # fmt: skip
    mesh.add_argument("--threshold", type=_threshold, default="auto",
                      help="density iso-level, or a rule: masks (match the training masks' silhouettes), opacity "
                      "(50%% opacity from outside), auto (masks when the images have alpha, else opacity)")  # fmt: skip
    mesh.add_argument("--keep-components", type=non_negative_int, default=1, help="largest components kept (0: all)")
    mesh.add_argument("--min-component-fraction", type=unit_interval_float, default=0.0,
                      help="drop kept components smaller than this fraction of the largest")  # fmt: skip
    mesh.add_argument("--target-faces", type=positive_int, default=None, help="decimate to about this many faces")
    mesh.add_argument("--no-vertex-colors", dest="vertex_colors", action="store_false", help="geometry only")
    mesh.add_argument("--texture-size", type=int_in_range(8, 16384), default=None,
                      help="bake a UV texture of this size (.obj/.glb; needs xatlas)")  # fmt: skip
    mesh.add_argument("--texture-backend", choices=["auto", "nvdiffrast", "torch"], default="auto",
                      help="UV rasteriser for the bake")  # fmt: skip
    mesh.add_argument("--chunk-size", type=positive_int, default=1 << 18, help="points per density query")
    mesh.set_defaults(func=_export_mesh)

    video = add_command(sub, "video", help="render a camera path to .mp4 or .gif")
    _common(video)
    video.add_argument("--path", default="orbit", help="orbit, spiral, or a nerfstudio camera_path.json")
    video.add_argument(
        "--outputs", type=_outputs, default=("rgb",),
        help="comma-separated, side by side: rgb, depth, normals, accumulation (default: rgb)",
    )  # fmt: skip
    video.add_argument("--frames", type=positive_int, default=120, help="frames of an orbit or spiral")
    video.add_argument("--fps", type=positive_float, default=None, help="frames per second (default: file's or 24)")
    video.add_argument("--width", type=int_in_range(1, 16384), default=None,
                       help="frame width (default: training images')")  # fmt: skip
    video.add_argument("--height", type=int_in_range(1, 16384), default=None,
                       help="frame height (default: training images')")  # fmt: skip
    video.add_argument("--radius", type=positive_float, default=None, help="orbit/spiral camera distance")
    video.add_argument("--elevation", type=finite_float, default=None, help="orbit/spiral elevation in degrees")
    video.add_argument("--fov", type=float_in_open_range(0.0, 180.0), default=None,
                       help="vertical field of view in degrees, in (0, 180)")  # fmt: skip
    video.add_argument("--save-camera-path", type=Path, default=None,
                       help="also write the path as a camera_path.json (for ns-render camera-path)")  # fmt: skip
    video.set_defaults(func=_export_video)

    gbuffers = add_command(
        sub, "gbuffers", help="any view's G-buffers in DiffusionRenderer's gbuffer_frames layout",
        description="Render base colour, normals, depth, roughness and metallic of the training views, the held-out "
        "views or an orbit, encoded as DiffusionRenderer's forward renderer reads them (camera-space normals, "
        "normalised depth, sRGB base colour; see relight3d.data.gbuffer_frames). The material comes from the "
        "field's material head, fitted first when the run has none.",
    )  # fmt: skip
    _gbuffer_options(gbuffers)
    gbuffers.set_defaults(func=_export_gbuffers)
