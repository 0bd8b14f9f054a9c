"""The hash encoding op: its torch reference (relight3d.ops._torch_hash) against hand-computed values, closed forms
and finite differences, and the compiled kernels (relight3d._C: C++ CPU, CUDA where a GPU is present) against the
reference and finite differences.

The kernels are compared on fixed layouts (dense and hashed levels, the NGP field's and tinycudann's level counts)
and on seeded random ones (1 to 16 levels, 2^6 to 2^15 rows per level, resolutions from 2-24 up to 1024, 1 to 8
features), with points inside the box, on its faces and corners, on grid nodes, outside it (clamped) and with a NaN
coordinate: the features, their vector-Jacobian products w.r.t. the table and the positions, and the second
derivatives that autograd normals trained with ``create_graph=True`` use (w.r.t. the table, the positions and the
incoming gradient).

Tolerances (float32), atol relative to the largest magnitude of the expected tensor. Features: the kernels perform
the reference's float operations in its order, rtol 1e-5, atol 1e-6. Table gradients are sums in another order;
position gradients and second derivatives also differ in how the product's derivative is formed (torch's prod
backward divides the product by the factor, and its double backward divides again) and are sums over levels of
terms up to the finest scale (squared) times the table values, of either sign: rtol 1e-4, atol 1e-5 for first
derivatives, 1e-3 and 1e-4 for second ones (CUDA, with --use_fast_math: ten times these).
"""

from __future__ import annotations

import contextlib
import random
from typing import Dict, Iterator, List, Tuple

import pytest
import torch
from ops_testing import EXT, needs_extension
from torch import Tensor

import relight3d.ops as ops
from relight3d.ops import HashGridLayout, _backend, _dispatch, _torch_hash, _wrapper, hash_grid_layout

TOL: Dict[Tuple[str, int], Tuple[float, float]] = {
    ("cpu", 0): (1e-5, 1e-6),  # features
    ("cpu", 1): (1e-4, 1e-5),  # first derivatives
    ("cpu", 2): (1e-3, 1e-4),  # second derivatives
    ("cuda", 0): (1e-4, 1e-5),
    ("cuda", 1): (1e-3, 1e-4),
    ("cuda", 2): (1e-2, 1e-3),
}
"""(rtol, atol) by device and order of derivative; atol is relative to the largest magnitude expected."""


def assert_close(actual: Tensor, expected: Tensor, device: str, order: int = 1) -> None:
    """Within rtol, and atol times the largest magnitude of ``expected`` (sums of terms of either sign cancel); NaN
    where the expected value is NaN."""
    rtol, atol = TOL[(device, order)]
    finite = expected.detach()[expected.isfinite()]
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=rtol, atol=atol * scale, equal_nan=True)


@contextlib.contextmanager
def kernels() -> Iterator[None]:
    """Within the block the op must run the compiled kernels (fails if the dispatcher would pick the reference)."""
    original = _dispatch.implementation

    def checked(op: str, args: Tuple) -> object:
        chosen = original(op, args)
        assert chosen is not _torch_hash.hash_encoding, "hash_encoding would run the torch reference, not the kernels"
        return chosen

    _dispatch.implementation = checked
    try:
        yield
    finally:
        _dispatch.implementation = original


def run(compiled: bool, positions: Tensor, table: Tensor, layout: HashGridLayout) -> Tensor:
    """The public op by the kernels (``compiled``) or by the reference."""
    with kernels() if compiled else _backend.torch_reference("hash_encoding"):
        return ops.hash_encoding(positions, table, layout)


NAN_ROW = 9
"""The row of :func:`make_points` with a NaN coordinate."""


def make_points(n: int, layout: HashGridLayout, seed: int = 0) -> Tensor:
    """Points in [-0.2, 1.2]^3, the first ones on special positions: box corners and faces, grid nodes of the finest
    level (where floor() is decided by rounding), just outside the box, far outside it, and one with a NaN."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g) * 1.4 - 0.2
    s = layout.scales[-1]
    node = (3.0 - 0.5) / s  # x * s + 0.5 == 3 up to rounding
    special = torch.tensor(
        [
            [0.0, 0.0, 0.0],
            [1.0, 1.0, 1.0],
            [0.5, 0.5, 0.5],
            [0.0, 1.0, 0.37],
            [node, 2 * node, 0.5],
            [-0.1, 0.3, 1.05],
            [1.0 + 1e-7, -1e-7, 0.999],
            [5.0, -3.0, 0.25],
            [node, 1.0 - node, 1.0],
            [0.2, float("nan"), 0.7],  # NAN_ROW
        ]
    )
    k = min(n, special.shape[0])
    x[:k] = special[:k]
    return x


def make_table(layout: HashGridLayout, features: int, seed: int = 0) -> Tensor:
    return torch.randn(layout.offsets[-1], features, generator=torch.Generator().manual_seed(seed))


def first_and_second(compiled: bool, x: Tensor, table: Tensor, layout: HashGridLayout, seed: int = 1) -> Tuple:
    """Features; the VJPs w.r.t. table and positions for a random cotangent g; then, for random cotangents (u, v) of
    those two gradients, the derivatives of <u, grad_table> + <v, grad_x> w.r.t. the table, the positions and g."""
    gen = torch.Generator().manual_seed(seed)
    x = x.clone().requires_grad_()
    t = table.clone().requires_grad_()
    out = run(compiled, x, t, layout)
    cot = torch.randn(out.shape, generator=gen).to(out.device).requires_grad_()
    grad_x, grad_t = torch.autograd.grad(out, (x, t), cot, create_graph=True)
    v = torch.randn(grad_x.shape, generator=gen).to(out.device)
    u = torch.randn(grad_t.shape, generator=gen).to(out.device)
    second = torch.autograd.grad((grad_x * v).sum() + (grad_t * u).sum(), (t, x, cot), allow_unused=True)
    second = tuple(torch.zeros_like(a) if s is None else s for s, a in zip(second, (t, x, cot)))
    return (out.detach(), grad_t.detach(), grad_x.detach(), *second)


def random_layouts(count: int, seed: int) -> List[Tuple[int, ...]]:
    """``count`` seeded draws of (levels, log2 rows, base resolution, finest resolution, features, points)."""
    rng = random.Random(seed)
    draws = []
    for _ in range(count):
        base = rng.randint(2, 24)
        draws.append((rng.randint(1, 16), rng.randint(6, 15), base, rng.randint(base, 1024),
                      rng.choice([1, 2, 3, 4, 5, 8]), rng.randint(1, 600)))  # fmt: skip
    return draws


# (levels, log2 table rows, base resolution, max resolution, features, points)
LAYOUTS = [
    (1, 4, 2, 2, 1, 50),  # a single dense 2^3 grid in 16 rows
    (2, 8, 4, 64, 2, 300),  # dense then hashed
    (4, 6, 3, 40, 3, 500),  # 3 features: the kernels' generic loop
    (12, 12, 16, 512, 2, 1000),  # the NGP field's levels, smaller tables
    (16, 10, 16, 2048, 4, 1000),  # tcnn's default levels
    (5, 12, 8, 16, 8, 400),  # all dense
    (3, 5, 16, 600, 2, 1),  # all hashed, one point
    (6, 9, 4, 200, 2, 0),  # no point
] + random_layouts(4, seed=20)


@needs_extension
@pytest.mark.parametrize(("levels", "log2", "base", "finest", "features", "n"), LAYOUTS)
def test_kernels_match_reference(device: str, levels: int, log2: int, base: int, finest: int, features: int,
                                 n: int) -> None:  # fmt: skip
    layout = hash_grid_layout(levels, log2, base, finest)
    table = make_table(layout, features, seed=levels)
    x = make_points(n, layout, seed=n)
    expected = first_and_second(False, x, table, layout)
    actual = first_and_second(True, x.to(device), table.to(device), layout)
    assert actual[0].shape == (n, levels * features)
    names = ["features", "grad_table", "grad_positions", "d2/dtable", "d2/dpositions", "d2/dgrad_out"]
    for i, (name, a, e) in enumerate(zip(names, actual, expected, strict=True)):
        assert a.shape == e.shape, name
        assert_close(a, e, device, order=(i + 2) // 3)
    if n > 10:
        assert all(float(e.nansum().abs()) > 0 for e in expected), "a vacuous comparison"
    # coordinates not strictly inside (0, 1) get no position gradient (torch.clamp's), nor does the NaN point
    outside = (x <= 0) | (x >= 1)
    assert bool((actual[2].cpu()[outside] == 0).all())
    if n > NAN_ROW:
        assert bool(actual[0][NAN_ROW].isnan().all()) and bool((actual[2][NAN_ROW] == 0).all())


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=needs_extension)])
def test_encoding_by_hand(device: str, compiled: bool) -> None:
    """Table row r holding (r, -r), points where every level's point sits mid-cell along each axis (pos 0.5 or
    scale + 0.5), so that each feature is the mean of the cell's 8 corner rows.

    Level 0, dense, 4^3 nodes (scale 3): rows ``x + 4y + 16z``, nodes past 3 clamped to 3. Level 1, hashed, 256 rows
    from row 64 (scale 63): ``64 + (x ^ 2654435761 y ^ 805459861 z) mod 256``, which is ``x ^ 177 y ^ 149 z`` in the
    low 8 bits (177 * 63 = 143, 177 * 64 = 64, 149 * 63 = 171, 149 * 64 = 64 modulo 256).

    * (0, 0, 0), cell corners 0, 1 on each axis: level 0 rows 0, 1, 4, 5, 16, 17, 20, 21 (mean 10.5); level 1
      0, 1, 177, 176, 149, 148, 36, 37 (mean 90.5).
    * (1, 1, 1), corners 3, 4 (level 0: all clamped to row 63) and 63, 64 (level 1: 27, 100, 212, 171, 240, 143,
      63, 64, mean 127.5).
    * (-3, 7, 1), clamped to (0, 1, 1): level 0 rows 60, 61 (mean 60.5); level 1 36, 37, 235, 234, 207, 206, 0, 1
      (mean 119.5).
    """
    if device == "cuda" and not compiled:
        pytest.skip("the reference runs the same on every device")
    layout = hash_grid_layout(2, 8, 4, 64)
    rows = torch.arange(320.0)
    table = torch.stack([rows, -rows], -1).to(device)
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-3.0, 7.0, 1.0]], device=device)
    means = torch.tensor([[10.5, 64 + 90.5], [63.0, 64 + 127.5], [60.5, 64 + 119.5]])
    expected = torch.stack([means, -means], -1).reshape(3, 4)
    torch.testing.assert_close(run(compiled, x, table, layout).cpu(), expected, rtol=0, atol=1e-4)


def linear_table(layout: HashGridLayout, a: Tensor) -> Tensor:
    """The rows of a single dense level holding ``a . node + 1`` at each node."""
    res = layout.resolutions[0]
    idx = torch.arange(res**3)
    nodes = torch.stack([idx % res, (idx // res) % res, idx // res**2], -1).to(a.dtype)
    return (nodes @ a + 1.0)[:, None]


def test_reference_reproduces_linear_functions() -> None:
    """A dense level whose rows hold a linear function of the node coordinates interpolates it exactly: at
    ``pos = x * scale + 0.5`` (inside the grid) the feature is that function of pos, its gradient ``scale * a``."""
    layout = hash_grid_layout(1, 12, 9, 9)  # one dense level of 9^3 nodes, scale 8
    assert layout.dense == (True,) and layout.offsets == (0, 9**3)
    a = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    x = (torch.rand(100, 3, dtype=torch.float64) * 0.9).requires_grad_()  # pos < 8: the clamp to res - 1 never applies
    out = _torch_hash.hash_encoding(x, linear_table(layout, a), *layout)
    torch.testing.assert_close(out[:, 0], (x.detach() * layout.scales[0] + 0.5) @ a + 1.0)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, (layout.scales[0] * a).expand(100, 3))


@needs_extension
def test_kernels_reproduce_linear_functions(device: str) -> None:
    layout = hash_grid_layout(1, 12, 9, 9)
    a = torch.tensor([0.5, -2.0, 3.0])
    x = (torch.rand(100, 3) * 0.9).requires_grad_()
    out = run(True, x.to(device), linear_table(layout, a).to(device), layout).cpu()
    torch.testing.assert_close(out[:, 0], (x.detach() * layout.scales[0] + 0.5) @ a + 1.0)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, (layout.scales[0] * a).expand(100, 3), rtol=1e-5, atol=1e-5)


TINY = hash_grid_layout(2, 4, 2, 6)
"""A dense level of 2^3 nodes (scale 1), then a hashed one (scale 5, 6^3 nodes in 16 rows)."""


def points_inside_cells(n: int, layout: HashGridLayout, margin: float, dtype: torch.dtype) -> Tensor:
    """``n`` points at least ``margin`` (in cells) from every cell face of every level and from the box's faces:
    within that margin the encoding is multilinear in each coordinate, so finite differences are exact."""
    x = torch.rand(50 * n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 0.9 + 0.05
    keep = torch.ones(x.shape[0], dtype=torch.bool)
    for scale in layout.scales:
        frac = (x * scale + 0.5).frac()
        keep &= ((frac > margin) & (frac < 1 - margin)).all(-1)
    assert int(keep.sum()) >= n
    return x[keep][:n].to(dtype)


def test_reference_gradcheck_float64() -> None:
    """First and second derivatives of the reference w.r.t. table and positions, against finite differences."""
    assert TINY.dense == (True, False)
    table = torch.randn(TINY.offsets[-1], 2, dtype=torch.float64, requires_grad=True)
    x = points_inside_cells(6, TINY, 0.01, torch.float64).requires_grad_()

    def fn(x: Tensor, table: Tensor) -> Tensor:
        return _torch_hash.hash_encoding(x, table, *TINY)

    assert torch.autograd.gradcheck(fn, (x, table))
    assert torch.autograd.gradgradcheck(fn, (x, table))


@needs_extension
@pytest.mark.filterwarnings("ignore:Input #.*is not a double precision:UserWarning")
def test_kernels_gradcheck_float32(device: str) -> None:
    """The kernels' first and second derivatives against finite differences, in float32 (the kernels' only dtype):
    eps 1e-2 moves a point at most 0.05 cells, and the points stay 0.1 cells inside their cells at every level, where
    the encoding is multilinear in each coordinate and linear in the table, so central differences are exact up to
    float32 rounding (~1e-7 / 1e-2 of the values)."""
    table = torch.randn(TINY.offsets[-1], 2, generator=torch.Generator().manual_seed(2)).to(device).requires_grad_()
    x = points_inside_cells(5, TINY, 0.1, torch.float32).to(device).requires_grad_()

    def fn(x: Tensor, table: Tensor) -> Tensor:
        with kernels():
            return ops.hash_encoding(x, table, TINY)

    assert torch.autograd.gradcheck(fn, (x, table), eps=1e-2, atol=1e-3, rtol=1e-3)
    assert torch.autograd.gradgradcheck(fn, (x, table), eps=1e-2, atol=1e-3, rtol=1e-3)


@needs_extension
def test_cpu_table_gradient_paths() -> None:
    """With at least as many levels as threads each level's gradient is summed by one task in point order:
    bit-identical for 1 or 2 threads. With more threads than levels (here 1 level, 2 threads, 2 x 16384 points) the
    points are split into groups summed in buffers; the result still matches the reference."""
    threads = torch.get_num_threads()
    layout = hash_grid_layout(4, 10, 8, 100)
    table = make_table(layout, 2)
    x = make_points(5000, layout)
    try:
        torch.set_num_threads(2)
        two = first_and_second(True, x, table, layout)[1]
        torch.set_num_threads(1)
        one = first_and_second(True, x, table, layout)[1]
        torch.set_num_threads(2)
        single_level = hash_grid_layout(1, 10, 64, 64)
        many = make_points(40_000, single_level, seed=3)
        t1 = make_table(single_level, 2)
        split = first_and_second(True, many, t1, single_level)[1]
        expected = first_and_second(False, many, t1, single_level)[1]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert_close(split, expected, "cpu")


@needs_extension
def test_dispatch_and_gradient_paths() -> None:
    """The kernels serve every call, positions requiring grad included; the table gradient alone is right; a third
    derivative through the kernels raises instead of being wrong."""
    layout = hash_grid_layout(3, 8, 4, 50)
    table = make_table(layout, 2).requires_grad_()
    x = make_points(60, layout)
    out = ops.hash_encoding(x, table, layout)
    assert type(out.grad_fn).__name__ == "_HashEncodingBackward"
    assert _dispatch.implementation("hash_encoding", (x, table, *layout)).func is _wrapper.run
    with _backend.torch_reference("hash_encoding"):
        assert _dispatch.implementation("hash_encoding", (x, table, *layout)) is _torch_hash.hash_encoding
    (grad_t,) = torch.autograd.grad(out.square().nansum(), table)
    ref_t = table.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(run(False, x, ref_t, layout).square().nansum(), ref_t)
    assert_close(grad_t, expected, "cpu")
    pts = x.clone().requires_grad_()
    (g1,) = torch.autograd.grad(ops.hash_encoding(pts, table, layout).nansum(), pts, create_graph=True)
    (g2,) = torch.autograd.grad(g1.square().sum(), pts, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice a function that was marked with @once_differentiable"):
        g2.sum().backward()


@needs_extension
def test_backward_skips_the_gradients_the_pass_does_not_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """Autograd normals (``autograd.grad`` w.r.t. the positions only) do not scatter a table gradient; every pass that
    reads the table's gradient gets it, and the normals' second derivative w.r.t. the table is unchanged."""
    layout = hash_grid_layout(3, 8, 4, 50)
    table = make_table(layout, 2).requires_grad_()
    x = make_points(60, layout)
    calls: List[Tuple[bool, bool]] = []
    kernel = _wrapper._ext().hash_encoding_bwd

    def recording_bwd(*args):  # noqa: ANN002, ANN202
        calls.append((bool(args[-2]), bool(args[-1])))
        return kernel(*args)

    monkeypatch.setattr(_wrapper._ext(), "hash_encoding_bwd", recording_bwd)

    def encode() -> Tuple[Tensor, Tensor]:
        pts = x.clone().requires_grad_()
        return pts, ops.hash_encoding(pts, table, layout)

    pts, out = encode()
    (normals,) = torch.autograd.grad(out.square().nansum(), pts, create_graph=True)
    assert calls == [(False, True)]  # (table, positions)
    loss = normals.nan_to_num().square().sum()
    (grad_t,) = torch.autograd.grad(loss, table)
    ref_t = table.detach().clone().requires_grad_()
    ref_pts = x.clone().requires_grad_()
    (ref_normals,) = torch.autograd.grad(run(False, ref_pts, ref_t, layout).square().nansum(), ref_pts,
                                         create_graph=True)  # fmt: skip
    (expected,) = torch.autograd.grad(ref_normals.nan_to_num().square().sum(), ref_t)
    assert_close(grad_t, expected, "cpu")
    calls.clear()
    pts, out = encode()
    torch.autograd.grad(out.nansum(), [pts, table])
    _, out = encode()
    out.nansum().backward()
    pts, out = encode()
    torch.autograd.grad(out.nansum(), table)
    assert calls == [(True, True), (True, True), (True, False)]  # backward() fills every leaf's .grad


def test_layout_is_tinycudanns() -> None:
    """Scales ``base * growth**l - 1`` as float32, resolutions ``ceil(scale) + 1``, dense while the grid has fewer
    nodes than the table: by hand for the docstring's grid and the NGP field's default 12 x 2^17 rows (growth
    32^(1/11) = 1.37035: level 1 scale 20.93, level 2 29.05, level 3 40.17, level 4 55.42, whose 57^3 nodes do not
    fit in 2^17 = 131072 rows while 42^3 = 74088 do)."""
    small = hash_grid_layout(n_levels=2, log2_table_size=8, base_resolution=4, max_resolution=64)
    assert small == HashGridLayout((3.0, 63.0), (4, 64), (0, 64, 320), (True, False))
    layout = hash_grid_layout(12, 17, 16, 512)
    assert layout.scales[0] == 15.0 and abs(layout.scales[-1] - 511.0) < 1e-3
    assert [round(s, 2) for s in layout.scales[1:5]] == [20.93, 29.05, 40.17, 55.42]
    assert layout.resolutions[:5] == (16, 22, 31, 42, 57) and layout.dense == (True,) * 4 + (False,) * 8
    assert layout.offsets[:5] == (0, 4096, 4096 + 10648, 4096 + 10648 + 29791, 4096 + 10648 + 29791 + 74088)
    assert layout.offsets[-1] == layout.offsets[4] + 8 * 2**17


def test_input_checks() -> None:
    layout = hash_grid_layout(2, 8, 4, 64)
    table = make_table(layout, 2)
    x = torch.rand(5, 3)
    with pytest.raises(ValueError, match="offsets from 0 to the table's 319 rows"):
        ops.hash_encoding(x, table[:-1], layout)
    with pytest.raises(ValueError, match="hashed: a power of two"):
        ops.hash_encoding(x, table[:-1], layout._replace(offsets=(0, 64, 319)))
    with pytest.raises(ValueError, match="level 0 is dense: 5\\^3 rows"):
        ops.hash_encoding(x, table, layout._replace(resolutions=(5, 64)))
    with pytest.raises(ValueError, match="0 < scale < 2\\^24"):
        ops.hash_encoding(x, table, layout._replace(scales=(float("nan"), 63.0)))
    with pytest.raises(ValueError, match="one scale, resolution and dense flag each"):
        ops.hash_encoding(x, table, layout._replace(dense=(True,)))
    with pytest.raises(TypeError, match="HashGridLayout"):
        ops.hash_encoding(x, table, tuple(layout))
    with pytest.raises(TypeError, match="float32"):
        ops.hash_encoding(x.double(), table, layout)
    with pytest.raises(ValueError, match="'positions' must have shape"):
        ops.hash_encoding(x[:, :2], table, layout)
    with pytest.raises(ValueError, match="n_levels"):
        hash_grid_layout(0, 8, 4, 64)
    with pytest.raises(ValueError, match="base_resolution <= max_resolution"):
        hash_grid_layout(4, 8, 64, 16)


@needs_extension
def test_kernel_entry_points_check_the_layout() -> None:
    layout = hash_grid_layout(2, 8, 4, 64)
    table = make_table(layout, 2)
    x = torch.rand(5, 3)
    with pytest.raises(RuntimeError, match="hashed level 1 needs a power of two"):
        EXT.hash_encoding_fwd(x, table[:-1], layout.scales, layout.resolutions, (0, 64, 319), layout.dense)
    with pytest.raises(RuntimeError, match="needs 0 < scale < 2\\^24"):
        EXT.hash_encoding_fwd(x, table, (float("nan"), 63.0), layout.resolutions, layout.offsets, layout.dense)
    with pytest.raises(RuntimeError, match="'grad_out' must have shape"):
        EXT.hash_encoding_bwd(torch.zeros(5, 3), x, table, *layout, True, True)


def test_field_encodes_with_the_op() -> None:
    """HashEncoding's torch path is the op: same features and gradients as the reference, normals trainable."""
    from relight3d.fields.hash_encoding import HashEncoding

    enc = HashEncoding(4, 2, 8, 4, 64, implementation="torch")
    x = make_points(200, enc.layout)[NAN_ROW + 1 :].requires_grad_()
    out = enc(x)
    ref_t = enc.table.detach().clone().requires_grad_()
    expected = run(False, x.detach(), ref_t, enc.layout)
    assert_close(out.detach(), expected, "cpu", order=0)
    (grad_x,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(grad_x.square().sum(), enc.table)
    ref_x = x.detach().clone().requires_grad_()
    (ref_gx,) = torch.autograd.grad(run(False, ref_x, ref_t, enc.layout).sum(), ref_x, create_graph=True)
    (ref_second,) = torch.autograd.grad(ref_gx.square().sum(), ref_t)
    assert_close(second, ref_second, "cpu", order=2)
