"""Compiled TensoRF VM sampling kernels (relight3d._C) against the grid_sample reference (relight3d.ops._torch_impl).

Forward values and vector-Jacobian products w.r.t. planes and lines under random cotangents, on several shapes
(no point, one, a thousand; 1, 8 and 16 channels, which the CPU kernels process in blocks of 1, 8 and 16; images of
2, 7 and 64 nodes), with points inside the box, on its faces and corners, on grid nodes, just outside (where
zeros padding still gives part of a cell) and far outside. Both CPU paths are covered: the padded channel-blocked
one and the direct one the kernels take for fewer points than a sixteenth of a plane's nodes (here: one point on
7 x 7 or 64 x 64 planes, and the 100 points on 40 x 52 planes). The same comparisons run on CUDA tensors where a
GPU is present.

Tolerances (float32). Forward: the kernels perform grid_sample's float operations, but torch's vectorised CPU
kernel may contract them into fused multiply-adds, so values agree to a few ulp: rtol 1e-5, atol 1e-6 (for values
of order 1). Gradients are sums over points in a different order (per channel block on the CPU, atomics on CUDA):
rtol 1e-4, atol 1e-5 on the CPU; CUDA adds --use_fast_math: 1e-4 / 1e-5 forward, 1e-3 / 1e-4 gradients.
"""

from __future__ import annotations

from typing import Tuple

import pytest
import torch
from ops_testing import EXT, Runner, assert_close, compiled, needs_extension, outputs_and_vjp, reference
from torch import Tensor

import relight3d.ops as ops
from relight3d.ops import _backend

pytestmark = needs_extension


def make_grids(c: int, h: int, w: int, length: int, seed: int = 0) -> Tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, c, h, w, generator=g), torch.randn(3, c, length, 1, generator=g)


def make_points(n: int, res: int, seed: int = 0) -> Tensor:
    """Points in [-1.3, 1.3]^3, the first ones on special positions: box faces, edges and corners, grid nodes, just
    outside the box (within a cell: partly sampled with zeros padding) and far outside it."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * 2.6 - 1.3
    node = -1.0 + 2.0 / max(res - 1, 1)  # the second grid node
    special = torch.tensor(
        [
            [1.0, 1.0, 1.0],
            [-1.0, -1.0, -1.0],
            [-1.0, 1.0, 0.0],
            [0.0, 0.0, 0.0],
            [node, -node, node],
            [1.0 + 0.2 / max(res - 1, 1), 0.3, -0.2],  # a fifth of a cell outside in x
            [0.1, -1.0 - 0.5 / max(res - 1, 1), 1.0],  # half a cell outside in y
            [0.2, 0.4, -1.0 - 1.5 / max(res - 1, 1)],  # beyond the padding cell in z
            [5.0, -7.0, 0.5],
            [-1.0, 0.25, 1.0],
        ]
    )
    k = min(n, special.shape[0])
    xyz[:k] = special[:k]
    return xyz


def vjp(run: Runner, planes: Tensor, lines: Tensor, xyz: Tensor, cotangent: Tensor) -> Tuple[Tensor, ...]:
    """Features and their VJPs w.r.t. planes and lines, by ``run`` (:func:`reference` or :func:`compiled`)."""
    return outputs_and_vjp(run, "sample_vm_features", (planes, lines, xyz), (0, 1), (cotangent,))


# (channels, plane height, plane width, line length, points): 1, 8 and 16 channels (CPU blocks of 1, 8 and 16),
# 12 (blocks of 4), 3 (of 1), 48 (three blocks of 16); H != W; one point on 7 x 7 or 64 x 64 planes and the 100
# points on 40 x 52 planes take the direct CPU path.
VM_CASES = [(c, res, res, res, n) for n in (0, 1, 1000) for c in (1, 8, 16) for res in (2, 7, 64)] + [
    (12, 5, 9, 11, 300),
    (3, 9, 4, 6, 40),
    (48, 16, 16, 16, 2000),
    (8, 40, 52, 30, 100),
]


@pytest.mark.parametrize(("c", "h", "w", "length", "n"), VM_CASES)
def test_sample_vm_features_matches_grid_sample(device: str, c: int, h: int, w: int, length: int, n: int) -> None:
    planes, lines = make_grids(c, h, w, length, seed=n + c + h)
    xyz = make_points(n, max(h, w), seed=n)
    cotangent = torch.randn(n, 3 * c, generator=torch.Generator().manual_seed(1))
    expected = vjp(reference, planes, lines, xyz, cotangent)
    dev = lambda x: x.to(device)  # noqa: E731
    actual = vjp(compiled, dev(planes), dev(lines), dev(xyz), dev(cotangent))
    assert actual[0].shape == (n, 3 * c)
    for i, (x, y) in enumerate(zip(actual, expected, strict=True)):
        assert_close(x, y, device, grad=i > 0)
    if n > 10:
        assert float(expected[0].abs().sum()) > 0 and float(expected[1].abs().sum()) > 0


def test_values_against_closed_form() -> None:
    """Planes linear in x, lines linear in their coordinate: bilinear interpolation reproduces them exactly."""
    res, c = 5, 2
    u = torch.linspace(-1, 1, res)
    planes = torch.stack([u.expand(res, res)] * c)[None].repeat(3, 1, 1, 1) + 2.0  # value 2 + (width coordinate)
    lines = (3.0 * u).view(1, 1, res, 1).repeat(3, c, 1, 1)  # value 3 * (line coordinate)
    xyz = torch.tensor([[0.3, -0.45, 0.8], [1.0, -1.0, 0.0], [1.2, 0.0, 0.0]])
    out = compiled("sample_vm_features", planes, lines, xyz)
    x, y, z = xyz[:2].unbind(-1)
    # pairs (plane width axis, line axis): (x, z), (x, y), (y, x)
    expected = torch.stack([(2 + x) * 3 * z, (2 + x) * 3 * y, (2 + y) * 3 * x], dim=-1).repeat_interleave(c, dim=-1)
    torch.testing.assert_close(out[:2], expected, rtol=1e-6, atol=1e-6)
    # x = 1.2 is 0.4 cells beyond the last node (at 1): zeros padding keeps 1 - 0.4 of it for planes 0, 1, line 2
    assert torch.allclose(out[2, :4], torch.zeros(4))  # z = y = 0: the lines of pairs 0 and 1 are 0
    assert torch.allclose(out[2, 4:], torch.full((2,), (2 + 0.0) * 3 * 1.0 * 0.6))


def test_non_finite_points_give_nan_features_and_no_gradient() -> None:
    planes, lines = make_grids(8, 7, 7, 7)
    xyz = make_points(100, 7)
    xyz[1] = torch.tensor([float("nan"), 0.0, 0.0])
    xyz[2] = torch.tensor([0.0, float("inf"), 0.0])
    expected = reference("sample_vm_features", planes, lines, xyz)
    for n_points in (100, 3):  # padded and direct CPU paths (3 < 7 * 7 / 16 points)
        out = compiled("sample_vm_features", planes, lines, xyz[:n_points])
        assert torch.equal(out.isnan(), expected[: out.shape[0]].isnan())
        assert bool(out[1:3].isnan().all()) and not bool(out[0].isnan().any())
    # the gradient is that of the finite points alone
    cotangent = torch.randn(100, 24)
    _, gp, gl = vjp(compiled, planes, lines, xyz, cotangent)
    finite = torch.ones(100, dtype=torch.bool)
    finite[1:3] = False
    _, gp_ref, gl_ref = vjp(reference, planes, lines, xyz[finite], cotangent[finite])
    torch.testing.assert_close(gp, gp_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gl, gl_ref, rtol=1e-4, atol=1e-5)


def test_cpu_results_do_not_depend_on_threads() -> None:
    """Each gradient block is summed by one task over all points in order: bit-identical results on every run and
    for any number of threads."""
    planes, lines = make_grids(16, 32, 32, 32)
    xyz = make_points(5000, 32)
    cotangent = torch.randn(5000, 48)
    threads = torch.get_num_threads()
    try:
        first = vjp(compiled, planes, lines, xyz, cotangent)
        second = vjp(compiled, planes, lines, xyz, cotangent)
        torch.set_num_threads(1)
        single = vjp(compiled, planes, lines, xyz, cotangent)
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, second, single, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_dispatch_and_gradient_paths() -> None:
    """The compiled kernels serve the public op; points that require grad take the grid_sample path, whose
    gradient w.r.t. the points exists (normals) and supports a second derivative (create_graph)."""
    planes, lines = make_grids(4, 6, 6, 6)
    planes.requires_grad_()
    xyz = make_points(50, 6).clamp(-0.9, 0.9)
    out = ops.sample_vm_features(planes, lines, xyz)
    assert type(out.grad_fn).__name__ == "_SampleVMFeaturesBackward"
    pts = xyz.clone().requires_grad_()
    out_pts = ops.sample_vm_features(planes, lines, pts)
    assert type(out_pts.grad_fn).__name__ != "_SampleVMFeaturesBackward"
    torch.testing.assert_close(out_pts, out, rtol=1e-5, atol=1e-6)
    (grad_pts,) = torch.autograd.grad(out_pts.square().sum(), pts, create_graph=True)
    (expected,) = torch.autograd.grad(reference("sample_vm_features", planes, lines, pts).square().sum(), pts)
    torch.testing.assert_close(grad_pts.detach(), expected)
    (second,) = torch.autograd.grad(grad_pts.sum(), planes)  # double backward reaches the planes
    assert second.abs().sum() > 0
    # only the inputs that require grad get a gradient
    lines_only = lines.clone().requires_grad_()
    (gl,) = torch.autograd.grad(ops.sample_vm_features(planes.detach(), lines_only, xyz).sum(), lines_only)
    _, _, gl_ref = vjp(reference, planes.detach(), lines, xyz, torch.ones(50, 12))
    torch.testing.assert_close(gl, gl_ref, rtol=1e-4, atol=1e-5)


def test_input_checks() -> None:
    planes, lines = make_grids(4, 6, 6, 6)
    xyz = make_points(10, 6)
    with pytest.raises(TypeError, match="float32"):
        ops.sample_vm_features(planes.double(), lines, xyz)
    with pytest.raises(ValueError, match="'lines' must have shape"):
        ops.sample_vm_features(planes, lines[:, :3], xyz)
    with pytest.raises(ValueError, match="'planes' must have shape"):
        ops.sample_vm_features(planes[:2], lines, xyz)
    with pytest.raises(ValueError, match="'xyz' must have shape"):
        ops.sample_vm_features(planes, lines, xyz[:, :2])
    with pytest.raises(RuntimeError, match="'grad_out' must have shape"):
        EXT.sample_vm_features_bwd(torch.zeros(10, 5), planes, lines, xyz)


def test_tensorf_field_uses_the_op() -> None:
    """TensoRF's density and features with the compiled op equal those with grid_sample, gradients included."""
    from relight3d.fields.tensorf_field import TensoRFField, TensoRFFieldSettings

    settings = TensoRFFieldSettings(
        12, n_density_components=4, n_appearance_components=8, appearance_dim=5, density_shift=0.0
    )
    field = TensoRFField(torch.tensor([-1.0, -1, -1, 1, 1, 1]), settings)
    positions = make_points(400, 12).clamp(-1.1, 1.1)
    params = [field.density_planes, field.density_lines, field.appearance_planes, field.appearance_lines]

    def run() -> Tuple[Tensor, ...]:
        loss = field.density(positions).sum() + field.appearance_features(positions).square().sum()
        return (loss.detach(), *torch.autograd.grad(loss, params))

    compiled_run = run()
    with _backend.torch_reference("sample_vm_features"):
        reference_run = run()
    for a, b in zip(compiled_run, reference_run, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
