"""Environment-map files: .exr / .hdr round trips, negative clamping, and one-line errors for bad files."""

from __future__ import annotations

import glob
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import OpenEXR
import pytest
import torch

from relight3d.errors import DataError
from relight3d.lighting import EnvMapError, read_envmap, write_envmap


def _hdr_map(height: int = 16, width: int = 32) -> torch.Tensor:
    """Positive radiance over four decades, with a bright 'sun'."""
    envmap = torch.rand(height, width, 3) * torch.logspace(-2, 1, width)[None, :, None]
    envmap[2, 5] = torch.tensor([500.0, 400.0, 300.0])
    return envmap


def _assert_one_line_error(err: pytest.ExceptionInfo, path: Path) -> None:
    assert isinstance(err.value, DataError)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")


def test_exr_round_trip_is_exact(tmp_path: Path) -> None:
    envmap = _hdr_map()
    read = read_envmap(write_envmap(tmp_path / "map.exr", envmap))
    assert read.dtype == torch.float32 and read.shape == envmap.shape
    assert torch.equal(read, envmap)


def test_exr_half_round_trip_within_half_precision(tmp_path: Path) -> None:
    envmap = _hdr_map()
    read = read_envmap(write_envmap(tmp_path / "map.exr", envmap, half=True))
    assert torch.allclose(read, envmap, rtol=1e-3, atol=1e-6)  # float16: 11-bit mantissa


def test_hdr_round_trip_within_rgbe_precision(tmp_path: Path) -> None:
    envmap = _hdr_map()
    read = read_envmap(write_envmap(tmp_path / "map.hdr", envmap))
    assert read.dtype == torch.float32 and read.shape == envmap.shape
    # RGBE shares one exponent per pixel and keeps 8 mantissa bits: error <= 2^-7 of the pixel's largest channel.
    tolerance = envmap.amax(dim=-1, keepdim=True) / 128.0
    assert ((read - envmap).abs() <= tolerance).all()
    assert (read - envmap).abs().max() > 0  # it really went through RGBE (not a float copy)


def test_hdr_orientation_and_channel_order(tmp_path: Path) -> None:
    """Row 0 stays the top row and RGB stays RGB through OpenCV's BGR world."""
    envmap = torch.zeros(4, 8, 3)
    envmap[0, 1, 0] = 2.0  # red near the top-left
    envmap[3, 6, 2] = 3.0  # blue near the bottom-right
    read = read_envmap(write_envmap(tmp_path / "map.hdr", envmap))
    assert torch.allclose(read, envmap, atol=1e-6)


def test_negative_radiance_is_clamped_on_read(tmp_path: Path) -> None:
    data = np.full((4, 8, 3), 0.5, dtype=np.float32)
    data[1, 2] = [-1e-3, 0.2, -5.0]  # lossy EXR compression leaves small negatives
    path = tmp_path / "negative.exr"
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"RGB": data}).write(
        str(path)
    )
    read = read_envmap(path)
    assert read.min() == 0.0
    assert torch.equal(read[1, 2], torch.tensor([0.0, 0.2, 0.0]))
    assert torch.equal(read[0, 0], torch.tensor([0.5, 0.5, 0.5]))


def test_luminance_only_exr_is_grey(tmp_path: Path) -> None:
    luminance = np.linspace(0.0, 4.0, 32, dtype=np.float32).reshape(4, 8)
    path = tmp_path / "grey.exr"
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"Y": luminance}).write(
        str(path)
    )
    read = read_envmap(path)
    assert torch.equal(read, torch.from_numpy(luminance)[..., None].expand(4, 8, 3))


def test_blender_shipped_map_reads_and_clamps() -> None:
    """A real Poly Haven map (DWA-compressed, with negatives) from bpy's studiolights, when bpy is installed."""
    from relight3d_bench.runner import BpyNotFoundError, find_bpy_python

    try:
        python = Path(find_bpy_python())
    except BpyNotFoundError as err:
        pytest.skip(str(err))
    # python may be a venv's symlink to the base interpreter: look in its own prefix (bin/..), not the link's target.
    found = sorted(
        glob.glob(str(python.parent.parent / "lib/python3*/site-packages/bpy/*/datafiles/studiolights/world/*.exr"))
    )
    if not found:
        pytest.skip("no bpy installation with datafiles/studiolights/world/*.exr")
    path = Path(next((p for p in found if p.endswith("courtyard.exr")), found[0]))
    with OpenEXR.File(str(path)) as exr:
        raw = exr.channels()["RGB"].pixels  # OpenEXR groups R, G, B into one [h, w, 3] array
    envmap = read_envmap(path)
    if path.name == "courtyard.exr":  # known to hold small negatives (min about -1.6e-4) from DWA compression
        assert (raw < 0).any()
    assert torch.equal(envmap, torch.from_numpy(np.maximum(raw, 0.0).astype(np.float32)))
    assert envmap.max() > 1.0  # HDR: the sky is brighter than display white


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_ldr_image_is_rejected(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"sky{suffix}"
    iio.imwrite(path, np.full((4, 8, 3), 128, dtype=np.uint8))
    with pytest.raises(EnvMapError, match="low-dynamic-range") as err:
        read_envmap(path)
    _assert_one_line_error(err, path)


def test_ldr_data_under_an_hdr_name_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "actually_png.hdr"
    path.write_bytes(iio.imwrite("<bytes>", np.zeros((4, 8, 3), dtype=np.uint8), extension=".png"))
    with pytest.raises(EnvMapError, match="PNG data.*low-dynamic-range") as err:
        read_envmap(path)
    _assert_one_line_error(err, path)


@pytest.mark.parametrize("suffix", [".exr", ".hdr"])
def test_truncated_file_is_rejected(tmp_path: Path, suffix: str) -> None:
    good = write_envmap(tmp_path / f"good{suffix}", _hdr_map(32, 64))
    path = tmp_path / f"truncated{suffix}"
    path.write_bytes(good.read_bytes()[:200])
    with pytest.raises(EnvMapError, match="corrupt") as err:
        read_envmap(path)
    _assert_one_line_error(err, path)


def test_garbage_missing_and_empty_files_are_rejected(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.exr"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(EnvMapError, match="unrecognised header") as err:
        read_envmap(garbage)
    _assert_one_line_error(err, garbage)

    missing = tmp_path / "missing.hdr"
    with pytest.raises(EnvMapError, match="not found") as err:
        read_envmap(missing)
    _assert_one_line_error(err, missing)

    empty = tmp_path / "empty.exr"
    empty.write_bytes(b"")
    with pytest.raises(EnvMapError, match="empty"):
        read_envmap(empty)


def test_write_rejects_bad_suffix_shape_and_non_finite(tmp_path: Path) -> None:
    with pytest.raises(EnvMapError, match=r"\.exr or \.hdr"):
        write_envmap(tmp_path / "map.png", torch.ones(4, 8, 3))
    with pytest.raises(EnvMapError, match="shape"):
        write_envmap(tmp_path / "map.exr", torch.ones(4, 8))
    bad = torch.ones(4, 8, 3)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(EnvMapError, match="NaN"):
        write_envmap(tmp_path / "map.exr", bad)


def test_hdr_writer_clamps_negatives(tmp_path: Path) -> None:
    envmap = torch.full((4, 8, 3), 0.25)
    envmap[0, 0] = -1.0
    read = read_envmap(write_envmap(tmp_path / "map.hdr", envmap))
    assert torch.equal(read[0, 0], torch.zeros(3))
    assert torch.allclose(read[1:], envmap[1:], rtol=1e-2)


def test_public_names_resolve_and_error_type() -> None:
    import relight3d.lighting as lighting

    for name in lighting.__all__:
        assert getattr(lighting, name) is not None, name
    assert issubclass(lighting.EnvMapError, DataError)
    with pytest.raises(AttributeError):
        lighting.no_such_function  # noqa: B018
