"""Fields: values against references, normals against an analytic density, freezing, resampling, hashing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from relight3d.fields.base import density_blob, spherical_harmonics_basis
from relight3d.fields.hash_encoding import HashEncoding
from relight3d.fields.ngp_field import NGPField, NGPFieldSettings
from relight3d.fields.tensorf_field import TensoRFField, TensoRFFieldSettings

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def tensorf(resolution: int, **settings) -> TensoRFField:
    return TensoRFField(AABB, TensoRFFieldSettings(init_resolution=resolution, **settings))


def _bilinear(img, x, y):
    """Bilinear lookup in an [H, W] array at continuous pixel coords (align_corners=True)."""
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    x1, y1 = min(x0 + 1, img.shape[1] - 1), min(y0 + 1, img.shape[0] - 1)
    fx, fy = x - x0, y - y0
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def test_tensorf_density_matches_explicit_vm_sum():
    field = tensorf(8, n_density_components=2, n_appearance_components=2, density_shift=0.0)
    p = torch.tensor([[0.3, -0.2, 0.55]])
    u = ((p[0] + 1) / 2 * 7).tolist()  # grid coordinates of the point
    total = 0.0
    for i, ((a, b), c) in enumerate((((0, 1), 2), ((0, 2), 1), ((1, 2), 0))):
        for k in range(2):
            plane = field.density_planes[i, k].detach()
            line = field.density_lines[i, k, :, 0].detach()
            pv = _bilinear(plane, u[a], u[b])
            c0 = int(math.floor(u[c]))
            lv = line[c0] * (1 - (u[c] - c0)) + line[c0 + 1] * (u[c] - c0)
            total += float(pv * lv)
    expect = F.softplus(torch.tensor(total)) * field.density_scale
    assert torch.allclose(field.density(p), expect[None], rtol=1e-5)
    assert float(field.density(torch.tensor([[1.5, 0.0, 0.0]]))) == 0.0  # outside the box


@pytest.mark.parametrize("method, tol", [("autograd", 1e-5), ("finite_difference", 1e-3)])
def test_normals_of_an_analytic_density_are_radial(method, tol):
    field = tensorf(4)

    def ball_density(positions):  # smooth, increasing towards the centre: the outward normal is x / |x|
        return torch.exp(-positions.square().sum(-1))

    field.density = ball_density  # type: ignore[method-assign]
    pts = F.normalize(torch.randn(16, 3), dim=-1) * 0.5
    n = field.normals(pts, method=method, epsilon=1e-2)
    assert torch.allclose(n, F.normalize(pts, dim=-1), atol=tol)
    assert float(field.normals(torch.zeros(1, 3), method=method).abs().max()) == 0.0  # no gradient: zero, not NaN
    with pytest.raises(ValueError, match="unknown method"):
        field.normals(pts, method="sobel")  # type: ignore[arg-type]


def test_density_blob_and_box_in_closed_form():
    """With empty grids, density is the activation of the blob alone, and zero outside the box."""
    field = tensorf(8, density_shift=-2.0)
    field.blob_density, field.blob_radius = 3.0, 0.4
    with torch.no_grad():
        field.density_planes.zero_()
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [0.9, 0.9, -0.9], [1.2, 0.0, 0.0]])
    blob = 3.0 * torch.exp(-pts.square().sum(-1) / (2 * 0.4**2))
    assert torch.allclose(density_blob(pts, 3.0, 0.4), blob)
    expect = F.softplus(blob - 2.0) * field.density_scale
    expect[3] = 0.0  # outside the box
    assert torch.allclose(field.density(pts), expect, rtol=1e-5)
    field.blob_density = 0.0
    assert torch.allclose(field.density(pts[:3]), F.softplus(torch.tensor(-2.0)) * field.density_scale)

    ngp = NGPField(AABB, NGPFieldSettings(n_levels=2, log2_table_size=8, max_resolution=32, implementation="torch"))
    ngp.blob_density, ngp.blob_radius = 3.0, 0.4
    with torch.no_grad():  # the density MLP outputs 1 everywhere: density = exp(1 + blob - 1)
        ngp.density_mlp[-1].weight.zero_()
        ngp.density_mlp[-1].bias.fill_(1.0)
    sigma, features = ngp.density_and_features(pts)
    assert torch.allclose(sigma[:3], torch.exp(blob[:3]), rtol=1e-5) and float(sigma[3]) == 0.0
    assert torch.allclose(ngp.density(pts), sigma)
    assert torch.allclose(features, torch.ones_like(features))  # the geometry features: the MLP's other outputs


def test_freeze_geometry_stops_density_gradients_only():
    field = tensorf(8)
    field.freeze_geometry(True)
    pts = torch.rand(64, 3) * 2 - 1
    loss = field.density(pts).sum() + field.color(field.appearance_features(pts), F.normalize(pts, dim=-1)).sum()
    loss.backward()
    assert field.density_planes.grad is None and field.density_lines.grad is None
    assert field.appearance_planes.grad is not None and field.appearance_planes.grad.abs().sum() > 0
    field.freeze_geometry(False)
    assert all(p.requires_grad for p in field.geometry_parameters())


def test_ngp_freeze_geometry():
    field = NGPField(AABB, NGPFieldSettings(n_levels=4, log2_table_size=10, max_resolution=64, implementation="torch"))
    field.freeze_geometry(True)
    pts = torch.rand(32, 3) * 2 - 1
    rgb = field.color(field.appearance_features(pts), F.normalize(pts, dim=-1))
    rgb.sum().backward()
    assert all(p.grad is None for p in field.geometry_parameters())
    assert all(p.grad is not None for p in field.appearance_parameter_groups()["appearance"])


def test_ngp_density_is_the_density_mlp_first_output():
    """density() is the density MLP's first output: exp(h_0 - 1) by hand, zero outside the box, and the same density
    (and position gradient) as density_and_features()."""
    field = NGPField(AABB, NGPFieldSettings(n_levels=4, log2_table_size=10, max_resolution=64, implementation="torch"))
    pts = (torch.rand(64, 3) * 2.4 - 1.2).requires_grad_(True)  # some outside the box
    expected = torch.exp(field.density_mlp(field.encoding((pts + 1) / 2))[:, 0] - 1) * (pts.abs() <= 1).all(-1)
    sigma = field.density(pts)
    assert torch.allclose(sigma, expected, rtol=1e-6, atol=0) and bool((sigma == 0).any())
    (grad,) = torch.autograd.grad(sigma.sum(), pts)
    density_both, features = field.density_and_features(pts)
    (grad_both,) = torch.autograd.grad(density_both.sum(), pts)
    assert torch.allclose(grad, grad_both, rtol=1e-5, atol=1e-7) and grad.abs().sum() > 0
    # Bitwise: finite-difference normals divide density differences by a tiny step, so any round-off between the
    # density-only path and the full path would show up as noise in the normals.
    assert torch.equal(sigma, density_both)
    expected_features = field.density_mlp(field.encoding((pts + 1) / 2))[:, 1:]
    assert torch.allclose(features, expected_features, rtol=1e-6, atol=1e-7)


def test_tensorf_upsampling_preserves_a_linear_field():
    field = tensorf(5, n_density_components=1, n_appearance_components=1)
    with torch.no_grad():
        lin = torch.linspace(-1, 1, 5)
        field.density_planes.zero_()
        field.density_planes[0, 0] = lin[None, :] + 0.5 * lin[:, None]  # varies along x (width) and y (height)
        field.density_lines.fill_(1.0)
    pts = torch.rand(100, 3) * 1.8 - 0.9
    before = field.density(pts)
    field.resample(9)
    assert field.density_planes.shape[-1] == 9 and field.resolution == 9
    assert torch.allclose(field.density(pts), before, rtol=1e-4, atol=1e-5)
    # Shrinking the box keeps values inside the new box.
    small = torch.tensor([-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])
    inner = pts * 0.5
    before_inner = field.density(inner)
    field.resample(9, small)
    assert torch.allclose(field.density(inner), before_inner, rtol=1e-4, atol=1e-5)
    assert torch.allclose(field.aabb, small)


def test_tensorf_loads_upsampled_checkpoint():
    field = tensorf(6)
    field.resample(10)
    state = field.state_dict()
    fresh = tensorf(6)
    params = list(fresh.parameters())
    fresh.load_state_dict(state)
    assert fresh.resolution == 10 and fresh.density_planes.shape[-1] == 10
    assert all(a is b for a, b in zip(params, fresh.parameters()))  # optimizers keep valid references
    pts = torch.rand(20, 3) * 2 - 1
    assert torch.allclose(fresh.density(pts), field.density(pts))


def test_hash_encoding_matches_explicit_hash():
    enc = HashEncoding(
        n_levels=2,
        features_per_level=2,
        log2_table_size=8,
        base_resolution=4,
        max_resolution=64,
        implementation="torch",
    )
    assert enc.level_dense == [True, False]  # 4^3 fits in 256 entries, 64^3 does not
    x = torch.tensor([[0.3, 0.7, 0.1]])
    out = enc(x)
    # level 1: hashed lookup, trilinear weights, computed by hand
    scale = float(enc.scales[1])
    pos = [c * scale + 0.5 for c in x[0].tolist()]
    base = [math.floor(p) for p in pos]
    frac = [p - b for p, b in zip(pos, base)]
    expect = torch.zeros(2)
    for corner in range(8):
        idx = [base[d] + ((corner >> d) & 1) for d in range(3)]
        h = (idx[0] * 1) ^ (idx[1] * 2654435761) ^ (idx[2] * 805459861)
        w = 1.0
        for d in range(3):
            w *= frac[d] if (corner >> d) & 1 else 1 - frac[d]
        expect += w * enc.table[int(enc.offsets[1]) + h % enc.level_sizes[1]].detach()
    assert torch.allclose(out[0, 2:], expect, atol=1e-7)
    out.sum().backward()
    assert enc.table.grad.abs().sum() > 0


def test_hash_encoding_tcnn_request_fails_clearly_without_tcnn():
    from relight3d._optional import tinycudann

    if tinycudann() is not None:
        pytest.skip("tinycudann is installed here")
    with pytest.raises(ImportError, match="tinycudann"):
        HashEncoding(implementation="tcnn")


def test_spherical_harmonics_are_orthonormal():
    d = F.normalize(torch.randn(200_000, 3, dtype=torch.float64), dim=-1)
    basis = spherical_harmonics_basis(d, 4)
    gram = basis.T @ basis * (4 * math.pi / d.shape[0])
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=0.03)
