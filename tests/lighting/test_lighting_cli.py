"""``relight3d envmap info | rotate | preview``: outputs checked against the library, errors as one line, --help."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from relight3d.cli import main
from relight3d.lighting import envmap_directions, read_envmap, rotate_envmap_about_up, write_envmap


def _run(argv: list, capsys: pytest.CaptureFixture) -> tuple:
    """``relight3d <argv>`` in this process: exit code, stdout, stderr."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _sun_map(tmp_path: Path) -> Path:
    envmap = torch.full((32, 64, 3), 0.05)
    envmap[6, 20] = torch.tensor([400.0, 380.0, 350.0])
    return write_envmap(tmp_path / "sun.exr", envmap)


def test_info_reports_size_range_and_light_direction(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _sun_map(tmp_path)
    code, out, _ = _run(["envmap", "info", str(path)], capsys)
    assert code == 0
    assert "32 x 64" in out
    assert "max 400" in out and "min 0.05" in out
    sun = envmap_directions(32, 64)[6, 20]
    azimuth = math.degrees(math.atan2(float(sun[1]), float(sun[0])))
    elevation = math.degrees(math.asin(float(sun[2])))
    line = next(line for line in out.splitlines() if "dominant light direction" in line)
    numbers = [float(v) for v in re.findall(r"[-+]?\d+\.\d+", line)]
    assert numbers[:3] == pytest.approx(sun.tolist(), abs=0.02)
    assert numbers[3] == pytest.approx(azimuth, abs=1.0) and numbers[4] == pytest.approx(elevation, abs=1.0)
    brightest = next(line for line in out.splitlines() if "brightest pixel" in line)
    assert [float(v) for v in re.findall(r"[-+]?\d+\.\d+", brightest)][:3] == pytest.approx(sun.tolist(), abs=1e-3)


def test_rotate_writes_the_rotated_map(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _sun_map(tmp_path)
    output = tmp_path / "turned.hdr"
    code, out, _ = _run(["envmap", "rotate", str(path), "--degrees", "90", "--output", str(output)], capsys)
    assert code == 0 and str(output) in out
    expected = rotate_envmap_about_up(read_envmap(path), math.pi / 2)
    got = read_envmap(output)
    assert ((got - expected).abs() <= expected.amax(dim=-1, keepdim=True) / 128).all()  # RGBE precision
    assert torch.equal(torch.nonzero(got.amax(-1) > 100), torch.tensor([[6, 4]]))  # 90 deg = 16 columns left


def test_preview_writes_an_srgb_png(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _sun_map(tmp_path)
    output = tmp_path / "preview.png"
    code, _, _ = _run(["envmap", "preview", str(path), "--output", str(output), "--exposure", "2"], capsys)
    assert code == 0
    image = iio.imread(output)
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8
    assert tuple(image[6, 20]) == (255, 255, 255)  # the sun clips
    srgb_of_0_2 = 1.055 * 0.2 ** (1 / 2.4) - 0.055  # 0.05 * 2^2 = 0.2
    assert abs(int(image[20, 50, 0]) - round(255 * srgb_of_0_2)) <= 1


def test_errors_are_one_line_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ldr = tmp_path / "sky.png"
    iio.imwrite(ldr, np.zeros((4, 8, 3), dtype=np.uint8))
    code, out, err = _run(["envmap", "info", str(ldr)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"relight3d: error: {ldr}: ")
    code, _, err = _run(["envmap", "rotate", str(_sun_map(tmp_path)), "--degrees", "10", "--output", "x.jpg"], capsys)
    assert code == 2 and err.count("\n") == 1 and ".exr or .hdr" in err
    code, _, err = _run(["envmap", "preview", str(tmp_path / "sun.exr"), "--output", str(tmp_path / "p.exr")], capsys)
    assert code == 2 and err.count("\n") == 1 and ".png" in err


def test_relight3d_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The real entry point's messages for a missing map and for a good one."""
    missing = tmp_path / "missing.exr"
    assert main(["envmap", "info", str(missing)]) == 2
    assert capsys.readouterr().err == f"relight3d: error: {missing}: file not found\n"
    assert main(["envmap", "info", str(_sun_map(tmp_path))]) == 0
    assert "dominant light direction" in capsys.readouterr().out


def test_importing_the_cli_module_is_cheap() -> None:
    code = (
        "import sys, relight3d.lighting.cli; print(sorted(m for m in ('torch', 'cv2', 'OpenEXR') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_help_of_every_envmap_command_exits_0(capsys: pytest.CaptureFixture) -> None:
    for command in (["envmap"], ["envmap", "info"], ["envmap", "rotate"], ["envmap", "preview"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
    assert "default: automatic (99th percentile -> white)" in " ".join(capsys.readouterr().out.split())
